"""Finding the features of a concept: which latents fire specifically on concept text.

A latent's specificity is a binomial z-score: how many standard deviations its firing rate on
concept tokens, p_c, lies above its rate on neutral tokens, p_n (its density),
z = (p_c - p_n) / sqrt((p_n + a)(1 - p_n + a) / n_c), with n_c concept tokens and a = 1 / (neutral
tokens) so that a latent never seen on neutral text stays finite. Density-aware: a latent firing
on 8% of all tokens (newlines, "the") that fires on 30% of concept tokens scores below one firing
on 10% of concept tokens and 0.3% of neutral ones. Each sequence's first token (BOS, or the
attention sink) is left out, as in training.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..data import Harvester
from ..saes.base import SAE
from .stats import logit_effects, unembedding


@dataclass
class Context:
    """A window of token ids around the token (at `position` in `ids`) where a latent fired `value`."""

    ids: list[int]
    position: int
    value: float


@dataclass
class ConceptFeature:
    """A candidate latent for a concept, with the evidence to judge it by eye."""

    feature: int
    specificity: float
    concept_density: float  # fraction of concept tokens it fires on
    neutral_density: float  # fraction of neutral tokens it fires on
    concept_contexts: list[Context] = field(default_factory=list)  # where it fires hardest on concept text
    neutral_contexts: list[Context] = field(default_factory=list)  # ... and on neutral text
    promoted_tokens: list[int] = field(default_factory=list)  # top direct logit effects of its direction


@torch.no_grad()
def _features(model: nn.Module, sae: SAE, hookpoint: str, ids_list: Sequence[Tensor]) -> list[Tensor]:
    """Dense SAE features (T - 1, d_sae) of each sequence, its first token dropped."""
    harvest = Harvester(model, [hookpoint])
    return [sae.encode(harvest(ids[None])[hookpoint][0, 1:].to(sae.W_dec.dtype)).float() for ids in ids_list]


def _density(features: list[Tensor]) -> tuple[Tensor, int]:
    tokens = sum(f.shape[0] for f in features)
    if tokens == 0:
        raise ValueError("no tokens to measure feature densities on (each text needs more than one token)")
    return sum((f > 0).sum(0) for f in features).float() / tokens, tokens


def _top_contexts(
    features: list[Tensor], ids_list: Sequence[Tensor], feature: int, n: int, radius: int
) -> list[Context]:
    """The n strongest activations of `feature` (at most one per sequence), with ±radius tokens."""
    peaks = [(float(f[:, feature].max()), i, int(f[:, feature].argmax())) for i, f in enumerate(features) if len(f)]
    contexts = []
    for value, i, pos in sorted(peaks, reverse=True)[:n]:
        if value <= 0:
            break
        token = pos + 1  # features start at the sequence's second token
        lo = max(0, token - radius)
        contexts.append(Context(ids_list[i][lo : token + radius + 1].tolist(), token - lo, value))
    return contexts


def rank_concept_features(
    model: nn.Module,
    sae: SAE,
    concept_ids: Sequence[Tensor],
    neutral_ids: Sequence[Tensor],
    n: int = 5,
    *,
    hookpoint: str | None = None,
    contexts: int = 3,
    radius: int = 6,
) -> list[ConceptFeature]:
    """The `n` latents most specific to the concept texts against the neutral texts (1-D token id
    tensors each), best first. Neutral text should look like what the SAE was trained on, so that
    p_n estimates each latent's density."""
    name = hookpoint or sae.config.hookpoint
    if name is None:
        raise ValueError(f"{type(sae).__name__} has no config.hookpoint; pass hookpoint='model.layers.N'")
    concept = _features(model, sae, name, concept_ids)
    neutral = _features(model, sae, name, neutral_ids)
    p_c, concept_tokens = _density(concept)
    p_n, neutral_tokens = _density(neutral)
    a = 1.0 / neutral_tokens
    specificity = (p_c - p_n) / torch.sqrt((p_n + a) * (1 - p_n + a) / concept_tokens)
    top = specificity.topk(min(n, len(specificity))).indices.tolist()
    promoted = logit_effects(sae.W_dec[top], unembedding(model), n=8).pos_ids
    return [
        ConceptFeature(
            feature=f,
            specificity=float(specificity[f]),
            concept_density=float(p_c[f]),
            neutral_density=float(p_n[f]),
            concept_contexts=_top_contexts(concept, concept_ids, f, contexts, radius),
            neutral_contexts=_top_contexts(neutral, neutral_ids, f, contexts, radius),
            promoted_tokens=promoted[row].tolist(),
        )
        for row, f in enumerate(top)
    ]


def _show(context: Context, tokenizer) -> str:
    """The window as text with the firing token in [[ ]]."""
    before = tokenizer.decode(context.ids[: context.position])
    token = tokenizer.decode(context.ids[context.position : context.position + 1])
    after = tokenizer.decode(context.ids[context.position + 1 :])
    return f"{context.value:6.2f}  {before}[[{token}]]{after}".replace("\n", "\\n")


def describe_candidates(candidates: Sequence[ConceptFeature], tokenizer) -> list[str]:
    """Lines showing each candidate's densities, promoted tokens and top contexts."""
    lines = []
    for c in candidates:
        promoted = ", ".join(repr(tokenizer.decode([t])) for t in c.promoted_tokens)
        lines.append(
            f"feature {c.feature}: specificity z={c.specificity:.1f}, fires on {c.concept_density:.1%} of concept "
            f"tokens and {c.neutral_density:.2%} of neutral tokens; promotes {promoted}"
        )
        lines += [f"    concept  {_show(ctx, tokenizer)}" for ctx in c.concept_contexts]
        lines += [f"    neutral  {_show(ctx, tokenizer)}" for ctx in c.neutral_contexts]
    return lines
