"""Steering evaluation, AxBench-style and offline: does adding a feature make the model talk about
its concept, and what does it cost in fluency?

For each feature (or group of features steered together) and strength, `steering_sweep` generates from a few prompts under `hubsae.steer`
(greedy, so the same inputs give the same text) and scores each continuation twice, both times with
the *unsteered* model reading the generated tokens:
- concept: a scorer's mean over the generated tokens; by default the SAE's own activation of the
  feature (`feature_scorer`), or a diff-in-means probe (`probe_scorer`) calibrated so that neutral
  text scores 0 and concept text 1, which puts different features on one scale;
- fluency: the perplexity of the generated tokens given the prompt under the clean model, pooled
  over prompts (exp of the mean per-token negative log-likelihood), and their repetition (the
  fraction of generated bigrams seen earlier in the same continuation, Welleck et al. 2019's rep
  metric): a model copying its own loop ("sea sea sea") earns a low perplexity, so perplexity
  alone would reward degenerate text.
Strength 0 runs the same path with a zero vector, so it scores exactly as the unsteered text.
A group of features is steered along the unit vector of the sum of their unit decoder directions,
so its strength means what a single feature's does (the added vector's length).
`pick_strength` takes the strength with the highest concept score whose perplexity stays within a
stated factor of the unsteered text's and whose repetition rises by at most a stated amount.

`rank_concept_features` finds candidate features for a concept: features that fire on many concept
tokens and few neutral ones (a density-aware log-odds score, so latents that fire everywhere lose).
"""

import json
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data import Harvester
from ..hooks import steer
from ..hooks.features import unit_directions
from ..plots import figure, have_matplotlib, save_png
from ..saes.base import SAE

# (token ids (T,) of one prompt + continuation, scored (T,) bool: the generated tokens) -> concept score
Scorer = Callable[[Tensor, Tensor], float]
# one latent, or a group of latents steered together
Feature = int | tuple[int, ...]


@dataclass
class SteeringPoint:
    """One strength of one feature: scores pooled over the prompts, and the continuations."""

    strength: float
    concept: float  # mean over prompts of the scorer's mean over generated tokens
    perplexity: float  # exp(mean NLL per generated token) under the clean model
    repetition: float  # fraction of generated bigrams already generated earlier in the same text
    texts: list[str] = field(default_factory=list)
    prompt_concepts: list[float] = field(default_factory=list)  # the concept score of each prompt's text
    prompt_perplexities: list[float] = field(default_factory=list)  # ... and its perplexity


@dataclass
class SteeringCurve:
    """A feature's (or group's) points in sweep order; `baseline` is the unsteered model's text, scored alike."""

    feature: Feature
    baseline: SteeringPoint
    points: list[SteeringPoint]
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return feature_label(self.feature)


def feature_label(feature: Feature) -> str:
    """'feature 12' or 'features 12+40+7'."""
    if isinstance(feature, int):
        return f"feature {feature}"
    return "features " + "+".join(str(f) for f in feature)


def _group(feature: Feature, sae: SAE) -> tuple[int, ...]:
    """The latent ids of a feature or group, checked against the SAE's width."""
    group = (feature,) if isinstance(feature, int) else tuple(feature)
    if not group or not all(isinstance(f, int) and not isinstance(f, bool) for f in group):
        raise ValueError(f"a feature is an int or a non-empty tuple of ints, got {feature!r}")
    bad = [f for f in group if not 0 <= f < sae.config.d_sae]
    if bad:
        raise ValueError(f"feature {bad[0]} is out of range for an SAE with d_sae={sae.config.d_sae}")
    return group


@torch.no_grad()
def steering_coefficients(sae: SAE, feature: Feature, strength: float) -> dict[int, float]:
    """`steer` coefficients that add `strength` along a feature's direction, or along the unit sum of a
    group's unit directions (each member gets strength / ||sum of the unit directions||)."""
    group = _group(feature, sae)
    if len(group) == 1:
        return {group[0]: float(strength)}
    norm = float(unit_directions(sae, torch.tensor(group, device=sae.W_dec.device)).sum(0).norm())
    if not norm > 0:
        raise ValueError(f"the directions of features {list(group)} sum to zero: the group has no direction")
    return {f: float(strength) / norm for f in group}


# ---- scorers -----------------------------------------------------------------------------------


def _hookpoint(sae: SAE, hookpoint: str | None) -> str:
    name = hookpoint or sae.config.hookpoint
    if name is None:
        raise ValueError(f"{type(sae).__name__} has no config.hookpoint; pass hookpoint='model.layers.N'")
    return name


def feature_scorer(model: nn.Module, sae: SAE, feature: Feature, hookpoint: str | None = None) -> Scorer:
    """Mean activation of `feature` (SAE units; a group: the sum of its members') over the scored
    tokens, read by the unsteered model."""
    group = list(_group(feature, sae))
    name = _hookpoint(sae, hookpoint)
    harvest = Harvester(model, [name])

    @torch.no_grad()
    def score(ids: Tensor, scored: Tensor) -> float:
        x = harvest(ids[None])[name][0]
        return float(sae.encode(x.to(sae.W_dec.dtype))[scored][:, group].float().sum(-1).mean())

    return score


def _mean_activation(harvest: Harvester, name: str, ids_list: Sequence[Tensor]) -> Tensor:
    """Mean activation over every token but each sequence's first (BOS or attention sink)."""
    rows = [harvest(ids[None])[name][0, 1:].float() for ids in ids_list]
    return torch.cat(rows).mean(0)


def probe_scorer(
    model: nn.Module, hookpoint: str, concept_ids: Sequence[Tensor], neutral_ids: Sequence[Tensor]
) -> Scorer:
    """A diff-in-means concept probe at `hookpoint`: projection on unit(mean_concept - mean_neutral),
    shifted and scaled so that the neutral text's mean scores 0 and the concept text's mean 1.

    It needs no SAE, so it scores every candidate feature on the same scale. `concept_ids` and
    `neutral_ids` are 1-D token id tensors (each starting with BOS or a token to skip).
    """
    harvest = Harvester(model, [hookpoint])
    mu_c = _mean_activation(harvest, hookpoint, concept_ids)
    mu_n = _mean_activation(harvest, hookpoint, neutral_ids)
    gap = (mu_c - mu_n).norm()
    if not gap > 0:
        raise ValueError("concept and neutral text have the same mean activation: the probe has no direction")
    direction = (mu_c - mu_n) / gap
    offset = float(mu_n @ direction)

    @torch.no_grad()
    def score(ids: Tensor, scored: Tensor) -> float:
        x = harvest(ids[None])[hookpoint][0, scored].float()
        return float(((x @ direction - offset) / gap).mean())

    return score


# ---- generation and fluency --------------------------------------------------------------------


@torch.no_grad()
def _continuations(model: nn.Module, inputs: dict, settings: dict) -> list[tuple[Tensor, Tensor]]:
    """Greedy continuations, one (ids (T,), scored (T,)) per prompt without its padding; scored marks
    the generated tokens up to and including the first EOS."""
    out = model.generate(**inputs, **settings)
    start = inputs["input_ids"].shape[1]
    eos = settings.get("eos_token_id", model.generation_config.eos_token_id)
    eos_ids = torch.tensor([] if eos is None else eos if isinstance(eos, list) else [eos], dtype=out.dtype)
    rows = []
    for prompt_mask, row in zip(inputs["attention_mask"].bool(), out, strict=True):
        gen = row[start:]
        is_eos = torch.isin(gen, eos_ids)
        before = is_eos.long().cumsum(-1) - is_eos.long()  # EOS tokens strictly before each position
        gen = gen[before == 0]
        ids = torch.cat([row[:start][prompt_mask], gen])
        scored = torch.arange(len(ids)) >= len(ids) - len(gen)
        rows.append((ids, scored))
    return rows


@torch.no_grad()
def continuation_nll(model: nn.Module, ids: Tensor, scored: Tensor) -> tuple[float, int]:
    """Summed negative log-likelihood of the scored tokens of `ids` (T,) under `model`, and their count."""
    logits = model(input_ids=ids[None]).logits[0].float()
    nll = nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")
    target = scored[1:]
    return float(nll[target].sum()), int(target.sum())


def _repeats(tokens: list[int]) -> tuple[int, int]:
    """(bigrams already seen earlier in `tokens`, bigrams)."""
    seen, repeated = set(), 0
    for bigram in zip(tokens, tokens[1:], strict=False):
        repeated += bigram in seen
        seen.add(bigram)
    return repeated, max(0, len(tokens) - 1)


def _point(model, tokenizer, inputs: dict, settings: dict, scorer: Scorer, strength: float) -> SteeringPoint:
    rows = _continuations(model, inputs, settings)
    nlls = [continuation_nll(model, ids, scored) for ids, scored in rows]
    concepts = [float(scorer(ids, scored)) for ids, scored in rows]
    texts = [tokenizer.decode(ids[scored], skip_special_tokens=True) for ids, scored in rows]
    perplexity = math.exp(sum(n for n, _ in nlls) / max(1, sum(c for _, c in nlls)))
    repeats = [_repeats(ids[scored].tolist()) for ids, scored in rows]
    repetition = sum(r for r, _ in repeats) / max(1, sum(n for _, n in repeats))
    perplexities = [math.exp(n / max(1, c)) for n, c in nlls]
    return SteeringPoint(
        float(strength), sum(concepts) / len(concepts), perplexity, repetition, texts, concepts, perplexities
    )


def _inputs(tokenizer, prompts: Sequence[str]) -> dict:
    if not prompts:
        raise ValueError("steering_sweep needs at least one prompt")
    tokenizer.padding_side = "left"  # continuations start at one column for every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return dict(tokenizer(list(prompts), return_tensors="pt", padding=True))


def steering_sweep(
    model: nn.Module,
    tokenizer,
    sae: SAE,
    features: Sequence[Feature],
    strengths: Sequence[float],
    prompts: Sequence[str],
    *,
    scorer_for: Callable[[Feature], Scorer] | None = None,
    max_new_tokens: int = 24,
    hookpoint: str | None = None,
    positions: str = "generated",
    relative: bool = True,
    generate_kwargs: dict | None = None,
) -> list[SteeringCurve]:
    """A `SteeringCurve` per feature over `strengths` (steer coefficients: fractions of ||x|| with
    `relative=True`, else absolute lengths along the unit decoder direction). A tuple of features is
    a group, steered along the unit sum of its directions (`steering_coefficients`).

    `scorer_for(feature)` gives the concept `Scorer` of a feature (one probe for all: `lambda f: probe`);
    by default the SAE's own activation of that feature (`feature_scorer`). `generate_kwargs` are passed to
    `generate()` on top of greedy decoding (e.g. `repetition_penalty`).
    """
    if not features or not strengths:
        raise ValueError(f"steering_sweep needs features and strengths, got {list(features)} and {list(strengths)}")
    bad = [s for s in strengths if not math.isfinite(s)]
    if bad:
        raise ValueError(f"strengths must be finite numbers, got {bad}")
    inputs = _inputs(tokenizer, prompts)
    settings = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    settings |= generate_kwargs or {}
    recorded = dict(prompts=list(prompts), positions=positions, relative=relative, **settings)
    recorded["hookpoint"] = _hookpoint(sae, hookpoint)
    curves = []
    scored: list[tuple[Scorer, SteeringPoint]] = []  # a scorer shared by features scores the unsteered text once
    for feature in features:
        feature = int(feature) if isinstance(feature, numbers.Integral) else tuple(int(f) for f in feature)
        _group(feature, sae)  # a bad feature fails before any generation
        score = scorer_for(feature) if scorer_for else feature_scorer(model, sae, feature, hookpoint)
        baseline = next((point for scorer, point in scored if scorer is score), None)
        if baseline is None:
            baseline = _point(model, tokenizer, inputs, settings, score, 0.0)
            scored.append((score, baseline))
        points = []
        for strength in strengths:
            coefficients = steering_coefficients(sae, feature, strength)
            with steer(model, sae, coefficients, hookpoint=hookpoint, positions=positions, relative=relative):
                points.append(_point(model, tokenizer, inputs, settings, score, strength))
        curves.append(SteeringCurve(feature, baseline, points, recorded))
    return curves


def pick_strength(
    curve: SteeringCurve, max_perplexity_ratio: float = 2.0, max_repetition_increase: float = 0.2
) -> SteeringPoint:
    """The point with the highest concept score among the fluent ones: perplexity at most
    `max_perplexity_ratio` times the unsteered text's and repetition at most `max_repetition_increase`
    above it. The baseline if no fluent point beats its concept score."""
    if not max_perplexity_ratio >= 1:
        raise ValueError(f"max_perplexity_ratio must be >= 1 (1 = no fluency loss allowed), got {max_perplexity_ratio}")
    if not max_repetition_increase >= 0:
        raise ValueError(f"max_repetition_increase must be >= 0, got {max_repetition_increase}")
    limit = curve.baseline.perplexity * max_perplexity_ratio
    loops = curve.baseline.repetition + max_repetition_increase
    fluent = [p for p in curve.points if p.perplexity <= limit and p.repetition <= loops]
    best = max(fluent, key=lambda p: p.concept, default=curve.baseline)
    return best if best.concept > curve.baseline.concept else curve.baseline


# ---- reports -----------------------------------------------------------------------------------


def describe_point(point: SteeringPoint) -> str:
    return f"concept={point.concept:.3f} perplexity={point.perplexity:.1f} repetition={point.repetition:.2f}"


def plot_steering_curves(curves: Sequence[SteeringCurve], path: str | os.PathLike, title: str = "steering") -> Path:
    """Concept score and perplexity against strength, one line per feature (needs matplotlib)."""
    fig = figure(9, 3.5)
    concept_ax, ppl_ax = fig.subplots(1, 2)
    for curve in curves:
        xs = [p.strength for p in curve.points]
        concept_ax.plot(xs, [p.concept for p in curve.points], marker="o", label=curve.label)
        ppl_ax.plot(xs, [p.perplexity for p in curve.points], marker="o", label=curve.label)
    concept_ax.set(xlabel="strength", ylabel="concept score", title=f"{title}: concept")
    ppl_ax.set(xlabel="strength", ylabel="perplexity (clean model)", title=f"{title}: fluency", yscale="log")
    concept_ax.legend(fontsize="small")
    return save_png(fig, path)


def write_sweep(
    curves: Sequence[SteeringCurve],
    out_dir: str | os.PathLike,
    max_perplexity_ratio: float = 2.0,
    max_repetition_increase: float = 0.2,
) -> dict[str, Path]:
    """steering.json (every curve, its texts and the picked strength) and, with matplotlib, steering.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    margins = dict(max_perplexity_ratio=max_perplexity_ratio, max_repetition_increase=max_repetition_increase)
    rows = [curve.to_dict() | {"picked": asdict(pick_strength(curve, **margins))} for curve in curves]
    doc = margins | {"curves": rows}
    paths = {"json": out / "steering.json"}
    paths["json"].write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    if have_matplotlib():
        paths["png"] = plot_steering_curves(curves, out / "steering.png")
    return paths
