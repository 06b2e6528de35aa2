"""Steering evaluation and concept-feature ranking on a tiny random Llama with SmolLM2's tokenizer."""

import json

import pytest
import torch
from tiny_models import tiny_llama_for as tiny_llama
from transformers import AutoTokenizer

from hubsae.cli import main
from hubsae.eval import (
    SteeringCurve,
    SteeringPoint,
    pick_strength,
    probe_scorer,
    rank_concept_features,
    steering_sweep,
    write_sweep,
)
from hubsae.eval.concepts import describe_candidates
from hubsae.eval.plots import have_matplotlib
from hubsae.llm import smollm2_path
from hubsae.saes import TopKSAE, TopKSAEConfig

PROMPTS = ["The weather today is", "My favourite thing is"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(smollm2_path())


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(
        tokenizer, initializer_range=0.5
    )  # peaked next-token distributions: fluency has something to lose


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(1)
    return TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint="model.layers.0")).eval()


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids])


def test_strength_zero_scores_as_unsteered_and_huge_strength_drops_fluency(model, tokenizer, sae):
    [curve] = steering_sweep(model, tokenizer, sae, [3], [0.0, 1000.0], PROMPTS, max_new_tokens=8)
    zero, huge = curve.points
    assert zero.texts == curve.baseline.texts and len(zero.texts) == len(PROMPTS)
    assert (zero.concept, zero.perplexity, zero.repetition) == (
        curve.baseline.concept,
        curve.baseline.perplexity,
        curve.baseline.repetition,
    )
    assert huge.texts != curve.baseline.texts
    assert huge.perplexity > 3 * curve.baseline.perplexity, (huge.perplexity, curve.baseline.perplexity)
    assert pick_strength(curve, 2.0).strength == 0.0  # the garbage point is never picked
    assert curve.settings["hookpoint"] == "model.layers.0" and curve.settings["relative"] is True


def test_sweep_with_a_shared_probe_and_absolute_strengths(model, tokenizer, sae):
    probe = probe_scorer(
        model, "model.layers.0", [_ids(tokenizer, "the sea and the waves")], [_ids(tokenizer, "a cat")]
    )
    curves = steering_sweep(
        model, tokenizer, sae, [1, 2], [0.5], PROMPTS[:1], scorer_for=lambda f: probe, relative=False, max_new_tokens=4
    )
    assert [c.feature for c in curves] == [1, 2]
    # the baseline does not depend on the feature when the scorer is shared
    assert curves[0].baseline == curves[1].baseline
    assert all(len(p.texts) == 1 for c in curves for p in c.points)


def test_probe_scores_its_own_texts_zero_and_one(model, tokenizer):
    concept, neutral = _ids(tokenizer, "the sea, the waves, the ship"), _ids(tokenizer, "bread and cheese")
    probe = probe_scorer(model, "model.layers.1", [concept], [neutral])
    skip_first = lambda ids: torch.arange(len(ids)) > 0  # noqa: E731
    assert probe(concept, skip_first(concept)) == pytest.approx(1.0, abs=1e-5)
    assert probe(neutral, skip_first(neutral)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="same mean activation"):
        probe_scorer(model, "model.layers.1", [concept], [concept])


def _point(strength, concept, perplexity, repetition=0.0):
    return SteeringPoint(strength, concept, perplexity, repetition, ["text"])


def test_pick_strength_maximizes_concept_within_the_fluency_margin():
    base = _point(0.0, 0.1, 10.0)
    points = [_point(0.5, 0.4, 14.0), _point(1.0, 0.7, 19.0), _point(2.0, 2.0, 80.0)]
    curve = SteeringCurve(7, base, points)
    assert pick_strength(curve, 2.0).strength == 1.0
    assert pick_strength(curve, 1.5).strength == 0.5
    assert pick_strength(curve, 10.0).strength == 2.0
    assert pick_strength(SteeringCurve(7, base, [_point(1.0, 0.05, 10.0)])) is base  # no gain: unsteered
    looping = SteeringCurve(7, base, [_point(0.5, 0.4, 14.0), _point(1.0, 0.9, 9.0, repetition=0.6)])
    assert pick_strength(looping, 2.0).strength == 0.5  # "sea sea sea" has a low perplexity but loops
    assert pick_strength(looping, 2.0, max_repetition_increase=1.0).strength == 1.0
    with pytest.raises(ValueError, match="max_perplexity_ratio must be >= 1"):
        pick_strength(curve, 0.5)


def test_sweep_rejects_bad_arguments(model, tokenizer, sae):
    with pytest.raises(ValueError, match="finite"):
        steering_sweep(model, tokenizer, sae, [1], [float("nan")], PROMPTS)
    with pytest.raises(ValueError, match="at least one prompt"):
        steering_sweep(model, tokenizer, sae, [1], [1.0], [])
    with pytest.raises(ValueError, match="feature 64 is out of range"):
        steering_sweep(model, tokenizer, sae, [64], [1.0], PROMPTS)


def test_write_sweep(tmp_path):
    curve = SteeringCurve(7, _point(0.0, 0.1, 10.0), [_point(1.0, 0.7, 19.0)], {"prompts": ["p"]})
    paths = write_sweep([curve], tmp_path, 2.0)
    doc = json.loads(paths["json"].read_text())
    assert doc["max_perplexity_ratio"] == 2.0
    [row] = doc["curves"]
    assert row["feature"] == 7 and row["picked"]["strength"] == 1.0 and row["points"][0]["texts"] == ["text"]
    if have_matplotlib():
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rank_concept_features_prefers_specific_over_dense_latents(model, tokenizer):
    """On the token embeddings, latent 1 reads the direction of ' sea' and latent 0 fires on every
    token; latent 0 fires on more concept tokens but is generic, so latent 1 ranks first."""
    emb = model.get_input_embeddings().weight.detach()
    sea = tokenizer(" sea", add_special_tokens=False).input_ids[0]
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=8, k=2, hookpoint="model.embed_tokens")).eval()
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-10.0)
        sae.b_dec.zero_()
        sae.b_enc[0] = 5.0  # fires everywhere
        sae.W_enc[:, 1] = emb[sea] / emb[sea].norm() ** 2 * 20.0  # 20 on ' sea', about 0 elsewhere
        sae.b_enc[1] = -10.0
    concept = [_ids(tokenizer, "the sea, the sea, the sea and the sea")]
    neutral = [_ids(tokenizer, "bread and cheese and apples on the table in the kitchen")]
    ranked = rank_concept_features(model, sae, concept, neutral, n=8, contexts=1, radius=2)
    best, dense = ranked[0], next(c for c in ranked if c.feature == 0)
    assert best.feature == 1 and best.specificity > 3
    assert best.neutral_density == 0 and best.concept_density == pytest.approx(4 / 11)
    assert dense.concept_density == dense.neutral_density == 1 and dense.specificity == pytest.approx(0, abs=1e-6)
    [ctx] = best.concept_contexts
    assert ctx.ids[ctx.position] == sea and ctx.value == pytest.approx(10.0, rel=1e-4)
    assert best.neutral_contexts == []
    lines = describe_candidates(ranked, tokenizer)
    assert lines[0].startswith("feature 1: specificity z=") and "[[ sea]]" in lines[1]


def test_steer_sweep_command(model, tokenizer, sae, tmp_path, caplog):
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    sae.save_pretrained(tmp_path / "sae")
    out = tmp_path / "sweep"
    argv = ["steer", str(tmp_path / "sae"), "--model", str(tmp_path / "lm"), "--sweep", "--relative"]
    argv += ["--feature", "5", "--strengths", "0,0.5,1000", "--max-new-tokens", "4", "--output-dir", str(out)]
    with caplog.at_level("INFO"):
        main(argv)
    doc = json.loads((out / "steering.json").read_text())
    [curve] = doc["curves"]
    assert [p["strength"] for p in curve["points"]] == [0.0, 0.5, 1000.0]
    assert curve["picked"]["strength"] != 1000.0
    assert "feature 5: unsteered concept=" in caplog.text and "picked strength" in caplog.text


def test_a_group_is_steered_along_the_unit_sum_of_its_directions(model, tokenizer, sae):
    from hubsae.eval.steering import steering_coefficients

    group = (1, 2, 5)
    coefficients = steering_coefficients(sae, group, 0.8)
    rows = sae.W_dec[list(group)].detach()
    units = rows / rows.norm(dim=-1, keepdim=True)
    added = sum(c * units[i] for i, c in enumerate(coefficients.values()))
    assert float(added.norm()) == pytest.approx(0.8, rel=1e-5)  # the strength is the added vector's length
    torch.testing.assert_close(added / added.norm(), units.sum(0) / units.sum(0).norm())
    assert steering_coefficients(sae, 4, 0.8) == {4: 0.8}
    [curve] = steering_sweep(model, tokenizer, sae, [group], [0.0, 1000.0], PROMPTS[:1], max_new_tokens=4)
    assert curve.feature == group and curve.label == "features 1+2+5"
    zero, huge = curve.points
    assert zero.texts == curve.baseline.texts and huge.texts != curve.baseline.texts
    assert len(zero.prompt_concepts) == len(zero.prompt_perplexities) == 1
    assert zero.prompt_concepts[0] == pytest.approx(curve.baseline.concept)
    with pytest.raises(ValueError, match="feature 64 is out of range"):
        steering_sweep(model, tokenizer, sae, [(1, 64)], [1.0], PROMPTS)
