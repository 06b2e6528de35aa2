"""`write_browser`, the reports, and the `hubsae eval` / `hubsae browse` commands on a tiny Llama
with SmolLM2's tokenizer (so token strings are real text)."""

import json

import pytest
import torch
from tiny_models import tiny_llama_for as tiny_llama
from transformers import AutoTokenizer

from hubsae.cli import main
from hubsae.eval import evaluate, write_browser
from hubsae.eval.plots import have_matplotlib
from hubsae.eval.report import text_contexts
from hubsae.hub import sae_entry
from hubsae.llm import smollm2_path
from hubsae.saes import TopKSAE, TopKSAEConfig

DOCS = [
    "In the beginning God created the heaven and the earth. And the earth was without form, and void.",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.",
] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(smollm2_path())


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


def _sae():
    return TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint="model.layers.0")).eval()


def test_write_browser_from_documents(model, tokenizer, tmp_path):
    sae = _sae()
    page = write_browser(model, tokenizer, sae, DOCS, tmp_path, context_length=16, max_contexts=8, n_examples=3)
    assert page == tmp_path / "index.html" and page.stat().st_size > 0
    data = json.loads((tmp_path / "features.json").read_text(encoding="utf-8"))
    report = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    metrics = report["saes"]["model.layers.0"]
    ids = torch.stack(list(text_contexts(DOCS, tokenizer, 16))[:8])
    ordinary = int((~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))).sum())
    assert ordinary < 8 * 16  # BOS and the EOS between documents are left out
    assert data["n_tokens"] == metrics["n_tokens"] == ordinary
    assert data["meta"]["fvu"] == metrics["fvu"] and data["meta"]["k"] == 4
    text, specials = "".join(DOCS), set(tokenizer.all_special_tokens)
    n_examples = 0
    for feat in data["features"]:
        for ex in feat["activations"]:  # windows are real text, possibly across a document separator
            pieces = "".join(t if t not in specials else "\0" for t in ex["tokens"]).split("\0")
            assert all(p in text for p in pieces), ex["tokens"]
            n_examples += 1
    assert n_examples > 0
    assert "| ce_loss_recovered |" in (tmp_path / "eval.md").read_text()
    assert (tmp_path / "density_model.layers.0.png").exists() == have_matplotlib()
    hist = report["density_histograms"]["model.layers.0"]
    assert sum(hist["counts"]) + hist["dead"] == 64 and hist["dead"] == round(metrics["dead_fraction"] * 64)
    card = json.loads((tmp_path / "card_metrics.json").read_text())
    entry = sae_entry(sae, card["model.layers.0"])  # what `hubsae push --metrics` records
    assert entry["metrics"]["fvu"] == metrics["fvu"] and "hookpoint" not in entry["metrics"]


def test_text_contexts_from_path_and_skip(tokenizer, tmp_path):
    f = tmp_path / "held_out.txt"
    f.write_text("\n".join(DOCS))
    from_path = list(text_contexts(str(f), tokenizer, 16))
    assert all(c.shape == (16,) and int(c[0]) == tokenizer.bos_token_id for c in from_path)
    assert [c.tolist() for c in text_contexts(str(f), tokenizer, 16, skip=2)] == [c.tolist() for c in from_path[2:]]


def test_eval_and_browse_commands(model, tokenizer, tmp_path):
    model_dir, sae_dir = tmp_path / "model", tmp_path / "sae"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    sae = _sae()
    sae.save_pretrained(sae_dir)
    data = tmp_path / "held_out.txt"
    data.write_text("\n".join(DOCS))
    common = ["--model", str(model_dir), "--data", str(data), "--context-length", "16", "--max-contexts", "6"]
    main(["eval", str(sae_dir), *common, "--skip-contexts", "1", "--out", str(tmp_path / "ev")])
    got = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert got["settings"]["skip_contexts"] == 1
    ctxs = list(text_contexts(str(data), tokenizer, 16, skip=1))[:6]
    [want] = evaluate(model, sae, ctxs, special_ids=tokenizer.all_special_ids, progress=False)
    for key in ("fvu", "l0", "ce_loss_clean", "ce_loss_recovered", "kl_score", "dead_fraction"):
        assert got["saes"]["model.layers.0"][key] == pytest.approx(want.metrics[key], rel=1e-5, abs=1e-7), key
    main(["browse", str(sae_dir), *common, "--examples", "2", "--out", str(tmp_path / "br")])
    html = (tmp_path / "br" / "index.html").read_text(encoding="utf-8")
    assert '<script type="application/json" id="data">' in html and "hubsae_topk at model.layers.0" in html
