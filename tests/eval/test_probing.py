"""Logistic probes against a closed form, k-sparse probing on latents with a known carrier, and one
offline end-to-end run of sparse probing on a tiny Llama over real text."""

import math

import pytest
import torch
from transformers import AutoTokenizer

from hubsae.data.labelled import LabelledTexts, code_snippets, fortunes
from hubsae.eval.probes import accuracy, fit_k_sparse_probe, fit_probe, top_k_mean_diff, train_test_split
from hubsae.eval.probing import ProbingConfig, plot_probing, probe_tasks, sparse_probing
from hubsae.llm import smollm2_path
from hubsae.plots import have_matplotlib


def test_probe_weight_matches_the_closed_form_optimum():
    """x = +1 (y = 1) or -1 (y = 0): by symmetry b = 0 and the optimum solves l2 * w = sigmoid(-w)."""
    x = torch.tensor([[1.0]] * 5 + [[-1.0]] * 5)
    y = torch.tensor([1] * 5 + [0] * 5)
    l2 = 0.1
    probe = fit_probe(x, y, l2=l2, standardize=False)
    lo, hi = 0.0, 50.0  # l2 * w - sigmoid(-w) is increasing in w: bisect its root
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if l2 * mid < 1 / (1 + math.exp(mid)) else (lo, mid)
    assert math.isclose(float(probe.weight), lo, rel_tol=1e-4)
    assert abs(float(probe.bias)) < 1e-5


def test_probe_separates_separable_data_and_standardizes():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=gen)
    x = torch.randn(400, 6, generator=gen) * torch.tensor([1.0, 100, 0.01, 1, 1, 1])
    x[:, 2] += 0.05 * (2 * y - 1)  # the class lives on a tiny-scale column
    train, test = train_test_split(400, 0.25, seed=0, labels=y)
    assert len(set(train.tolist()) & set(test.tolist())) == 0 and len(train) + len(test) == 400
    probe = fit_probe(x[train], y[train])
    assert accuracy(probe, x[test], y[test]) == 1.0
    assert probe.directions()[0].abs().argmax() == 2


def test_multiclass_probe_predicts_the_class():
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(300) % 3
    x = torch.nn.functional.one_hot(y, 3).float() * 2 + 0.3 * torch.randn(300, 3, generator=gen)
    probe = fit_probe(x, y)
    assert probe.weight.shape == (3, 3) and accuracy(probe, x, y) > 0.97


def _carried_latents(n: int = 600, width: int = 50, carriers=(7, 13, 21)):
    """Sparse random latents; class c switches latent carriers[c] on (and nothing else tells it)."""
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(n) % len(carriers)
    latents = torch.rand(n, width, generator=gen).pow(4) * (torch.rand(n, width, generator=gen) < 0.3)
    for c, latent in enumerate(carriers):
        latents[:, latent] = (labels == c) * (1 + torch.rand(n, generator=gen))
    resid = torch.randn(n, 16, generator=gen)
    resid[:, 0] += labels.float()  # the activation knows class 2 from class 0, roughly
    return resid, latents, labels


def test_k1_finds_the_carrying_latent():
    resid, latents, labels = _carried_latents()
    result = probe_tasks(resid, latents, labels, ["a", "b", "c"], ProbingConfig(ks=(1, 2, 5)))
    for name, latent in zip("abc", (7, 13, 21), strict=True):
        assert result.per_class[name]["k1_latents"] == [latent]
        assert result.per_class[name]["k1"] > 0.97
    assert result.top_k_accuracy[1] > 0.97 and result.sae_accuracy > 0.95
    # a probe on one random non-carrying latent is no better than chance
    y = (labels == 0).long()
    train, test = train_test_split(len(y), 0.2, seed=0, labels=y)
    chance = fit_probe(latents[train], y[train], features=torch.tensor([30]))
    assert accuracy(chance, latents[test], y[test]) < 0.72  # the majority class is 2/3
    assert top_k_mean_diff(latents, y, 1).tolist() == [7]
    assert fit_k_sparse_probe(latents, y, 1).features.tolist() == [7]


def test_too_small_a_class_is_an_error():
    resid, latents, _ = _carried_latents(n=30)
    labels = torch.tensor([0] * 14 + [1] * 13 + [2] * 3)
    with pytest.raises(ValueError, match="class 'c' has 3 examples"):
        probe_tasks(resid, latents, labels, ["a", "b", "c"], ProbingConfig())


def test_end_to_end_on_a_tiny_llama(tmp_path):
    from tiny_models import tiny_llama_for, topk_sae

    (tmp_path / "english").write_text(
        "\n%\n".join(f"The {w} walked along the river at dawn and thought about the weather." for w in "abcdefghijkl"),
        encoding="utf-8",
    )
    english = fortunes(["english"], per_class=12, directory=tmp_path)
    python = code_snippets(["python"], per_class=12, seed=0, max_chars=200)
    data = LabelledTexts(
        python.texts + english.texts, [0] * 12 + [1] * 12, ["python", "english"], python.sources + english.sources
    )
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = tiny_llama_for(tokenizer)
    sae = topk_sae("model.layers.1", d_sae=64, k=8)
    result = sparse_probing(model, tokenizer, sae, data, config=ProbingConfig(ks=(1, 2, 5), max_tokens=48))
    out = result.to_dict()
    assert set(out["top_k_accuracy"]) == {1, 2, 5} and out["settings"]["num_texts"] == 24
    assert all(0 <= v <= 1 for v in [result.llm_accuracy, result.sae_accuracy, *result.top_k_accuracy.values()])
    assert result.llm_accuracy > 0.7  # code and prose differ in their token statistics even in a random model
    if have_matplotlib():
        png = plot_probing({"toy": result}, tmp_path / "probing.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
