"""`hubsae eval --suite`: core + dictionary end to end offline on a tiny Llama, seeds of one run
aggregated in the report, and the errors for unknown or unavailable steps."""

import json
import sys

import numpy as np
import pytest
import torch
from tiny_models import tiny_llama_for
from transformers import AutoTokenizer

from hubsae.cli import main
from hubsae.eval import evaluate
from hubsae.eval.metrics import decoder_max_cosine
from hubsae.eval.plots import have_matplotlib
from hubsae.eval.report import text_contexts
from hubsae.eval.seeds import matched_fraction
from hubsae.eval.suite import STEPS, parse_suite, run_suite, seed_groups
from hubsae.llm import smollm2_path
from hubsae.saes import TopKSAE, TopKSAEConfig

DOCS = ["The quick brown fox jumps over the lazy dog while the cat sleeps in the sun."] * 6


def _sae(seed: int) -> TopKSAE:
    torch.manual_seed(seed)
    return TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint="model.layers.0")).eval()


def test_suite_core_and_dictionary_over_seeds(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = tiny_llama_for(tokenizer)
    model_dir, data = tmp_path / "model", tmp_path / "held_out.txt"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data.write_text("\n".join(DOCS))
    saes = {s: _sae(s) for s in (3, 4)}
    for s, sae in saes.items():
        sae.save_pretrained(tmp_path / "run" / f"seed_{s}" / "model.layers.0")
    args = ["--model", str(model_dir), "--data", str(data), "--context-length", "16", "--max-contexts", "4"]
    main(["eval", "--suite", "core,dictionary", str(tmp_path / "run"), *args, "--composition-steps", "20",
          "--out", str(tmp_path / "ev")])  # fmt: skip
    doc = json.loads((tmp_path / "ev" / "eval.json").read_text())
    names = [str(tmp_path / "run" / f"seed_{s}" / "model.layers.0") for s in saes]
    assert doc["saes"] == names and doc["settings"]["suite"] == ["core", "dictionary"]
    ctxs = list(text_contexts(str(data), tokenizer, 16))[:4]
    want = evaluate(model, list(saes.values()), ctxs, special_ids=tokenizer.all_special_ids, progress=False)
    fvus = [w.metrics["fvu"] for w in want]
    for name, w in zip(names, want, strict=True):
        assert doc["results"]["core"][name]["fvu"] == pytest.approx(w.metrics["fvu"], rel=1e-5)
    cos = [float(decoder_max_cosine(sae.W_dec.detach()).mean()) for sae in saes.values()]
    assert [doc["results"]["dictionary"][n]["mean_cos_sim"] for n in names] == pytest.approx(cos, rel=1e-5)
    [(group, seeds)] = doc["seeds"].items()
    assert group.endswith("seed_*/model.layers.0") and seeds["members"] == names
    assert seeds["metrics"]["core/fvu"]["mean"] == pytest.approx(np.mean(fvus), rel=1e-5)
    assert seeds["metrics"]["core/fvu"]["sd"] == pytest.approx(np.std(fvus, ddof=1), rel=1e-4)
    W = [sae.W_dec.detach() for sae in saes.values()]
    assert seeds["matching"]["pairs"][f"{names[0]} -> {names[1]}"]["matched"] == matched_fraction(W[0], W[1])
    md = (tmp_path / "ev" / "eval.md").read_text()
    assert "## core" in md and "## dictionary" in md and "| composition_random |" in md
    assert "(2 seeds: mean +- sd" in md and "| core/fvu |" in md and "Cross-seed matching" in md
    if have_matplotlib():
        pngs = {p.name for p in (tmp_path / "ev").glob("*.png")}
        assert "dictionary.png" in pngs and sum(p.startswith("core_density_") for p in pngs) == 2


def test_dictionary_step_needs_no_model_and_core_does(tmp_path):
    saes = {"a": _sae(0), "b": _sae(1)}
    path = run_suite(["dictionary"], saes, tmp_path, options={"composition_steps": 5}, progress=False)
    doc = json.loads(path.read_text())
    assert doc["results"]["dictionary"]["a"]["unique_features"]["b"]["unique_at_0.2"] >= 0
    assert doc["seeds"] == {}  # "a" and "b" are not seed folders of one run
    with pytest.raises(ValueError, match="'core' needs a model"):
        run_suite(["core"], saes, tmp_path, progress=False)


def test_unknown_step_names_the_known_ones():
    assert parse_suite("core, dictionary,core") == ["core", "dictionary"]
    with pytest.raises(ValueError, match="'bogus'.*known: core, dictionary"):
        parse_suite("core,bogus")
    with pytest.raises(ValueError, match="known"):
        main(["eval", "--suite", "bogus", "some_sae"])


def test_a_missing_step_module_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "hubsae.eval.absorption", None)  # import now fails
    with pytest.raises(ImportError, match="step 'absorption' needs hubsae.eval.absorption"):
        STEPS["absorption"].run(None)


def test_seed_groups():
    names = ["r/seed_0/model.layers.1", "r/seed_1/model.layers.1", "r/seed_0/model.layers.2", "x/seed_0", "y"]
    assert seed_groups(names) == {"r/seed_*/model.layers.1": names[:2]}


def test_absorption_and_probing_steps_on_a_tiny_llama(tmp_path):
    from hubsae.data.labelled import code_snippets
    from hubsae.eval.absorption import AbsorptionConfig, absorption
    from hubsae.eval.probing import ProbingConfig, sparse_probing

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = tiny_llama_for(tokenizer)
    saes = {"s": _sae(0)}
    absorb = dict(icl_examples=3, max_k=3, min_probe_f1=0.0, batch_size=64)
    probe = dict(ks=(1, 2, 5), max_tokens=48)
    options = dict(absorption_words=260, absorption_config=absorb, probing_datasets=("code",), probing_per_class=6,
                   probing_config=probe)  # fmt: skip
    path = run_suite(["absorption", "probing"], saes, tmp_path, model=model, tokenizer=tokenizer,
                     contexts=lambda: iter(()), options=options, progress=False)  # fmt: skip
    doc = json.loads(path.read_text())
    want = absorption(model, tokenizer, saes["s"], config=AbsorptionConfig(max_words=260, **absorb))
    got = doc["results"]["absorption"]["s"]
    assert got["mean_absorption_fraction"] == pytest.approx(want.mean_absorption_fraction)
    data = code_snippets(per_class=6, seed=0)
    want = sparse_probing(model, tokenizer, saes["s"], data, config=ProbingConfig(seed=0, **probe))
    assert doc["results"]["probing"]["s"]["code"]["llm_accuracy"] == pytest.approx(want.llm_accuracy)
    md = (tmp_path / "eval.md").read_text()
    assert "## absorption" in md and "| code/top_k_accuracy/1 |" in md and "per_class" not in md
    if have_matplotlib():
        assert {"absorption_s.png", "probing_s.png"} <= {p.name for p in tmp_path.glob("*.png")}


def test_absorption_and_probing_run_the_llm_once_for_all_saes(tmp_path):
    """The LLM's side (word prompts, probing texts) does not depend on the SAE: the steps run the model
    once per hookpoint, and each SAE still scores exactly what absorption() / sparse_probing() give it."""
    from hubsae.data.labelled import code_snippets
    from hubsae.eval.absorption import AbsorptionConfig, absorption
    from hubsae.eval.probing import ProbingConfig, sparse_probing

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = tiny_llama_for(tokenizer)
    saes = {"a": _sae(0), "b": _sae(1), "c": _sae(2)}
    absorb = dict(icl_examples=3, max_k=3, min_probe_f1=0.0, batch_size=64, max_words=200)
    probe = dict(ks=(1, 2), max_tokens=32)
    options = dict(absorption_config=absorb, probing_datasets=("code",), probing_per_class=5, probing_config=probe)
    calls = []
    handle = model.model.embed_tokens.register_forward_hook(lambda *_: calls.append(1))
    path = run_suite(["absorption", "probing"], saes, tmp_path, model=model, tokenizer=tokenizer,
                     contexts=lambda: iter(()), options=options, progress=False)  # fmt: skip
    handle.remove()
    batches = -(-200 // 64) + -(-20 // 8)  # word batches (at most) + probing batches, once each
    assert 0 < len(calls) <= batches
    doc = json.loads(path.read_text())["results"]
    data = code_snippets(per_class=5, seed=0)
    for name, sae in saes.items():
        want = absorption(model, tokenizer, sae, config=AbsorptionConfig(**absorb))
        got = doc["absorption"][name]
        assert got["mean_absorption_fraction"] == pytest.approx(want.mean_absorption_fraction, abs=1e-6)
        assert got["mean_num_split_latents"] == pytest.approx(want.mean_num_split_latents)
        assert got["settings"]["num_words"] == want.settings["num_words"]
        want = sparse_probing(model, tokenizer, sae, data, config=ProbingConfig(seed=0, **probe))
        got = doc["probing"][name]["code"]
        assert got["sae_accuracy"] == pytest.approx(want.sae_accuracy)
        assert got["top_k_accuracy"] == {str(k): pytest.approx(v) for k, v in want.top_k_accuracy.items()}


class Shrugger:
    """A chat backend that never answers in the scorers' format: explanations are its reply, every
    score an unreadable answer."""

    name = "shrugger"

    def chat(self, messages, max_tokens: int, temperature: float = 0.0) -> str:
        return "no idea"


def test_autointerp_step_with_a_given_backend(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = tiny_llama_for(tokenizer)
    ctxs = list(text_contexts(DOCS * 4, tokenizer, 32))
    options = dict(explainer=Shrugger(), autointerp_latents=2, max_contexts=len(ctxs))
    path = run_suite(["autointerp"], {"s": _sae(0)}, tmp_path, model=model, tokenizer=tokenizer,
                     contexts=lambda: iter(ctxs), options=options, progress=False)  # fmt: skip
    summary = json.loads(path.read_text())["results"]["autointerp"]["s"]
    assert summary["explainer"] == summary["scorer"] == "shrugger" and summary["n_latents"] == 2
    full = json.loads((tmp_path / "autointerp_s" / "autointerp.json").read_text())
    assert [li["explanation"] for li in full["latents"]] == ["no idea", "no idea"]
    assert summary["detection_unparsed"] > 0


def test_autointerp_step_takes_an_autointerp_config(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = tiny_llama_for(tokenizer)
    ctxs = list(text_contexts(DOCS * 4, tokenizer, 32))
    config = dict(n_top_explain=2, n_sampled_explain=1, n_top_score=1, n_sampled_score=0, n_non_activating=2, radius=3)
    options = dict(explainer=Shrugger(), autointerp_latents=2, max_contexts=len(ctxs), autointerp_config=config)
    run_suite(["autointerp"], {"s": _sae(0)}, tmp_path, model=model, tokenizer=tokenizer,
              contexts=lambda: iter(ctxs), options=options, progress=False)  # fmt: skip
    full = json.loads((tmp_path / "autointerp_s" / "autointerp.json").read_text())
    assert {k: full["config"][k] for k in config} == config
    for li in full["latents"]:  # what the scorers saw: at most 1 activating + 2 non-activating contexts
        counts = li["scores"]["detection"]
        seen = sum(counts[k] for k in ("true_positives", "false_negatives", "true_negatives", "false_positives"))
        assert seen + counts["n_unparsed"] <= 3
