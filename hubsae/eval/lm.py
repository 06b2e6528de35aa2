"""Evaluate SAEs on a language model over held-out contexts, in one pass.

Per batch of contexts the model runs once clean (the activation at every SAE's hookpoint is
captured), then per SAE once with the reconstruction spliced in and once with the activation
zero-ablated. Special tokens (BOS, EOS, padding) are left untouched by both interventions and
excluded from every metric, as SAEBench does: BOS activations are outliers an SAE is not meant to
reconstruct. Cross-entropy counts a prediction when both its position and its target are ordinary
tokens; KL is KL(P_clean ‖ P_new) per ordinary position.

A transcoder (`config.hookpoint_out`) is scored where it writes: FVU and the other reconstruction
metrics compare its output, computed from the clean read activation, with the clean activation at
`hookpoint_out`; splicing puts that output there, and zero ablation zeroes the write point (for an MLP
transcoder: the MLP's output), so CE recovered is measured against removing the sublayer.
"""

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..hooks import resolve_hookpoint
from ..hooks.attach import add_hook, hooks_removed
from ..hooks.capture import capture
from ..saes.base import SAE
from .examples import ActivationHistogram, TopActivations
from .metrics import (
    ReconstructionMetrics,
    decoder_max_cosine,
    fraction_recovered,
    kl_from_log_probs,
    kl_score,
    token_cross_entropy,
)

logger = logging.getLogger(__name__)


@dataclass
class _Sums:
    """Running (sum, count) pairs of the language-model metrics of one SAE."""

    ce_clean: list = field(default_factory=lambda: [0.0, 0])
    ce_spliced: list = field(default_factory=lambda: [0.0, 0])
    ce_zero: list = field(default_factory=lambda: [0.0, 0])
    kl_spliced: list = field(default_factory=lambda: [0.0, 0])
    kl_zero: list = field(default_factory=lambda: [0.0, 0])

    def add(self, name: str, pair: tuple[Tensor, Tensor]) -> None:
        acc = getattr(self, name)
        acc[0] += float(pair[0])
        acc[1] += int(pair[1])


@dataclass
class SAEEvaluation:
    """The result for one SAE: `metrics` (JSON-able) and the accumulators behind them."""

    hookpoint: str
    recon: ReconstructionMetrics
    top: TopActivations | None = None
    hist: ActivationHistogram | None = None
    samples: TopActivations | None = None
    sums: _Sums = field(default_factory=_Sums)
    metrics: dict = field(default_factory=dict)
    hookpoint_out: str | None = None  # a transcoder's write point (None: the SAE writes where it reads)

    @property
    def write_point(self) -> str:
        return self.hookpoint_out or self.hookpoint


def _mean(pair: list) -> float:
    return pair[0] / pair[1] if pair[1] else float("nan")


@torch.no_grad()
def _logits(model: nn.Module, ids: Tensor) -> Tensor:
    return model(input_ids=ids, use_cache=False).logits


@torch.no_grad()
def _with_replacement(model: nn.Module, hookpoint: str, fn: Callable[[Tensor], Tensor], ids: Tensor) -> Tensor:
    """Logits with the activation at `hookpoint` replaced by fn(activation); the hook is removed after."""
    handles = []
    with hooks_removed(handles):
        handles.append(add_hook(resolve_hookpoint(model, hookpoint), fn))
        return _logits(model, ids)


@torch.no_grad()
def _capture(model: nn.Module, hookpoints: Sequence[str], ids: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Clean logits and the activation at each hookpoint."""
    return capture(model, hookpoints, lambda: _logits(model, ids))


def _hookpoint(sae: SAE) -> str:
    if not sae.config.hookpoint:
        raise ValueError(f"{type(sae).__name__} has no config.hookpoint; set it to the module path the SAE reads")
    return sae.config.hookpoint


@torch.no_grad()
def _evaluate_batch(model, saes, results, ids: Tensor, keep: Tensor) -> None:
    points = [p for r in results for p in (r.hookpoint, r.write_point)]
    clean, acts = _capture(model, list(dict.fromkeys(points)), ids)
    mask = keep.unsqueeze(-1)
    logp_clean = torch.log_softmax(clean[keep].float(), dim=-1)  # once for every KL below
    n_kept = keep.sum()
    for sae, res in zip(saes, results, strict=True):
        x, y = acts[res.hookpoint], acts[res.write_point]
        out = sae(x.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype), compute_losses=False)
        y_hat, feats = out.reconstruction.to(device=y.device, dtype=y.dtype), out.features
        res.recon.update(y[keep], y_hat[keep], feats[keep.to(feats.device)])
        if res.top is not None:
            res.top.update(feats, ids, keep)
            res.hist.update(feats[keep.to(feats.device)])
        if res.samples is not None:
            res.samples.update(feats, ids, keep)
        # upstream of the write point nothing changes, so the clean read activation's output is what splicing inserts
        spliced = _with_replacement(model, res.write_point, lambda a, r=y_hat: torch.where(mask, r, a), ids)
        zeroed = _with_replacement(model, res.write_point, lambda a: a.masked_fill(mask, 0.0), ids)
        res.sums.add("ce_spliced", token_cross_entropy(spliced, ids, keep))
        res.sums.add("ce_zero", token_cross_entropy(zeroed, ids, keep))
        res.sums.add("kl_spliced", (kl_from_log_probs(logp_clean, spliced[keep]), n_kept))
        res.sums.add("kl_zero", (kl_from_log_probs(logp_clean, zeroed[keep]), n_kept))
    ce_clean = token_cross_entropy(clean, ids, keep)
    for res in results:
        res.sums.add("ce_clean", ce_clean)


def _finish(sae: SAE, res: SAEEvaluation) -> dict:
    m = res.recon.compute()
    s = res.sums
    ce_clean = _mean(s.ce_clean)
    ce_sae, ce_zero = _mean(s.ce_spliced), _mean(s.ce_zero)
    kl_sae, kl_zero = _mean(s.kl_spliced), _mean(s.kl_zero)
    m.update(
        ce_loss_clean=ce_clean,
        ce_loss_spliced=ce_sae,
        ce_loss_zero_ablated=ce_zero,
        ce_loss_delta=ce_sae - ce_clean,
        ce_loss_recovered=fraction_recovered(ce_clean, ce_sae, ce_zero),
        kl_spliced=kl_sae,
        kl_zero_ablated=kl_zero,
        kl_score=kl_score(kl_sae, kl_zero),
        mean_max_decoder_cosine=float(decoder_max_cosine(sae.W_dec.detach()).mean()),
    )
    where = {"hookpoint": res.hookpoint} | ({"hookpoint_out": res.hookpoint_out} if res.hookpoint_out else {})
    return {**where, "architecture": sae.config.model_type, "d_sae": sae.config.d_sae, **m}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    saes: SAE | Sequence[SAE],
    contexts: Iterable[Tensor],
    *,
    batch_size: int = 8,
    max_contexts: int | None = None,
    special_ids: Iterable[int] = (),
    n_examples: int = 0,
    n_samples: int = 0,
    example_radius: int = 5,
    progress: bool = True,
) -> list[SAEEvaluation]:
    """Evaluate each SAE at its `config.hookpoint` (a transcoder: where it writes) on `contexts` ((T,) or (B, T) token-id tensors).

    `special_ids` (e.g. `tokenizer.all_special_ids`) are excluded; `n_examples > 0` also collects
    that many top-activating contexts per latent (window ± `example_radius`) and activation
    histograms, for the feature browser; `n_samples > 0` a uniform random sample of that many
    firing contexts per latent (typical rather than top activations). Each result's `metrics` holds every scalar metric.
    """
    if model.training:
        logger.warning("evaluate(): %s is in training mode (dropout on); call model.eval() first", type(model).__name__)
    saes = [saes] if isinstance(saes, SAE) else list(saes)
    if not saes:
        raise ValueError("evaluate() needs at least one SAE")
    results = []
    for sae in saes:
        # sums live beside the SAE; the per-latent collectors on the CPU, where the browser reads them
        recon = ReconstructionMetrics(sae.config.resolved_d_out, sae.config.d_sae, device=sae.W_dec.device)
        top = TopActivations(sae.config.d_sae, n_examples, example_radius) if n_examples else None
        hist = ActivationHistogram(sae.config.d_sae) if n_examples else None
        samples = TopActivations(sae.config.d_sae, n_samples, example_radius, sample=True) if n_samples else None
        out = sae.config.hookpoint_out if sae.config.hookpoint_out != sae.config.hookpoint else None
        results.append(SAEEvaluation(_hookpoint(sae), recon, top, hist, samples, hookpoint_out=out))
    device = next(model.parameters()).device
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long, device=device)
    n_done = 0
    bar = tqdm(total=max_contexts, desc="evaluating", unit="ctx", disable=not progress)
    for ids in _batches(contexts, batch_size, max_contexts):
        ids = ids.to(device)
        _evaluate_batch(model, saes, results, ids, ~torch.isin(ids, special))
        n_done += ids.shape[0]
        bar.update(ids.shape[0])
    bar.close()
    if n_done == 0:
        raise ValueError("evaluate() got no contexts: the held-out text is empty or shorter than one context")
    for sae, res in zip(saes, results, strict=True):
        res.metrics = _finish(sae, res)
        logger.info("%s: %s", res.hookpoint, {k: round(v, 4) for k, v in res.metrics.items() if isinstance(v, float)})
    return results


def _batches(contexts: Iterable[Tensor], batch_size: int, max_contexts: int | None) -> Iterable[Tensor]:
    """Stack single contexts (T,) into (B, T) batches; pass (B, T) tensors through, capped at max_contexts."""
    buf: list[Tensor] = []
    seen = 0
    for ctx in contexts:
        rows = ctx.unsqueeze(0) if ctx.dim() == 1 else ctx
        if max_contexts is not None:
            rows = rows[: max_contexts - seen]
        seen += rows.shape[0]
        buf.extend(rows)
        while len(buf) >= batch_size:
            yield torch.stack(buf[:batch_size])
            buf = buf[batch_size:]
        if max_contexts is not None and seen >= max_contexts:
            break
    if buf:
        yield torch.stack(buf)
