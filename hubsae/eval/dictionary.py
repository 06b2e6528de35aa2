"""Decoder-geometry metrics that need no LLM: composition, unique features, MeanCosSim, each with a
random control (OrtSAE, arXiv 2509.22033 §4).

- **Composition**: a BatchTopK meta-SAE (dictionary F/4, k = 4) is trained to reconstruct the SAE's
  unit-norm decoder rows; its explained variance is how much the latents are sparse combinations of
  a smaller set of directions (Leask et al., "meta-SAEs", as OrtSAE §4 uses them). Lower = more atomic.
- **Unique features**: the fraction of an SAE's latents whose largest cosine to *another* SAE's
  latents is below a threshold (OrtSAE uses 0.2). Random unit rows in d = 576 already clear 0.2
  for a sizeable fraction, so the whole curve over thresholds is reported, beside random rows.
- **MeanCosSim**: mean over latents of the largest cosine to another row of the same decoder
  (OrtSAE eq. 6; `hubsae.eval.metrics.decoder_max_cosine`), beside random rows of the same shape.

The random control is always i.i.d. Gaussian rows normalized to unit norm, of the same shape.
"""

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..saes.batchtopk import BatchTopKSAE, BatchTopKSAEConfig
from ..saes.sparse import batch_topk
from .metrics import decoder_max_cosine

logger = logging.getLogger(__name__)

UNIQUE_THRESHOLD = 0.2  # OrtSAE §4
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
# The meta-SAE's init draws torch.randn(width, d) like `random_unit_rows`: with the same seed its
# decoder would start as the first rows of the random control (a head start for the control).
META_SEED_OFFSET = 7_919


def unit_rows(W: Tensor) -> Tensor:
    """Rows scaled to unit norm (float32); a zero row stays zero."""
    if W.ndim != 2:
        raise ValueError(f"a decoder must be 2-D (d_sae, d), got shape {tuple(W.shape)}")
    W = W.detach().float()
    return W / W.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)


def random_unit_rows(n: int, d: int, seed: int = 0) -> Tensor:
    """(n, d) i.i.d. Gaussian rows normalized to unit norm: the random control of every metric here."""
    gen = torch.Generator().manual_seed(seed)
    return unit_rows(torch.randn(n, d, generator=gen))


@torch.no_grad()
def cross_max_cosine(W_a: Tensor, W_b: Tensor, chunk: int = 2048) -> Tensor:
    """For each row of W_a, its largest cosine to any row of W_b, (len(W_a),). Signed: decoder
    directions are read with non-negative activations, so an anti-parallel row is no counterpart."""
    if W_a.ndim != 2 or W_b.ndim != 2 or W_a.shape[1] != W_b.shape[1]:
        raise ValueError(f"decoders must be (n, d) with the same d, got {tuple(W_a.shape)} and {tuple(W_b.shape)}")
    a, b = unit_rows(W_a), unit_rows(W_b).to(W_a.device)
    return torch.cat([(a[i : i + chunk] @ b.T).max(-1).values for i in range(0, len(a), chunk)]).cpu()


def unique_feature_curve(W_a: Tensor, W_b: Tensor, thresholds: Sequence[float] = THRESHOLDS) -> dict[float, float]:
    """{threshold: fraction of W_a's latents whose max cosine to W_b's latents is below it}."""
    best = cross_max_cosine(W_a, W_b)
    return {float(t): float((best < t).double().mean()) for t in thresholds}


def unique_feature_fraction(W_a: Tensor, W_b: Tensor, threshold: float = UNIQUE_THRESHOLD) -> float:
    """Fraction of W_a's latents with no latent of W_b above `threshold` cosine (OrtSAE §4: 0.2)."""
    return unique_feature_curve(W_a, W_b, [threshold])[float(threshold)]


def _meta_sae(d: int, width: int, k: int, mean: Tensor, seed: int) -> BatchTopKSAE:
    with torch.random.fork_rng(devices=[]):  # the global RNG of the caller is left as it was
        torch.manual_seed(seed + META_SEED_OFFSET)
        sae = BatchTopKSAE(BatchTopKSAEConfig(d_in=d, d_sae=width, k=k))
    with torch.no_grad():
        sae.b_dec.copy_(mean)  # start at the rows' mean, so the dictionary spends itself on the rest
    return sae.to(mean.device)


@torch.no_grad()
def batch_topk_explained_variance(sae: BatchTopKSAE, X: Tensor) -> float:
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(X)||^2 with BatchTopK over all of X at once
    (exactly k active latents per row on average; no threshold estimate involved)."""
    features, _ = batch_topk(sae.pre_acts(X), sae.config.k)
    err = (X - sae.decode(features)).pow(2).sum()
    total = (X - X.mean(0)).pow(2).sum()
    return float(1 - err / total) if total > 0 else math.nan


def composition_rate(
    W_dec: Tensor,
    width: int | None = None,
    k: int = 4,
    steps: int = 1500,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> float:
    """Explained variance of a BatchTopK meta-SAE (dictionary `width` = d_sae // 4, `k` = 4, OrtSAE
    §4) trained on the unit-norm decoder rows; lower = more atomic.

    Adam with a cosine decay over `steps` minibatches of shuffled rows; AuxK revives latents that
    did not fire in the last pass over the rows. The EV is measured on all rows with BatchTopK over
    the whole set (`batch_topk_explained_variance`).
    """
    X = unit_rows(W_dec)
    n, d = X.shape
    width = max(1, n // 4) if width is None else width
    if not 0 < k <= width:
        raise ValueError(f"the meta-SAE needs 0 < k <= width, got k={k}, width={width} (decoder {tuple(W_dec.shape)})")
    sae = _meta_sae(d, width, k, X.mean(0), seed)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, n)
    window = max(1, math.ceil(n / batch_size))  # steps per pass over the rows
    last_fired = torch.zeros(width, dtype=torch.long, device=X.device)
    sae.train()
    for step in tqdm(range(steps), desc="meta-SAE", leave=False, disable=not progress):
        rows = torch.randint(n, (batch_size,), generator=gen).to(X.device)
        out = sae(X[rows], dead_mask=(step - last_fired) > window)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sched.step()
        sae.set_decoder_norm_to_unit_norm()
        last_fired[out.active_latents(width)] = step
    return batch_topk_explained_variance(sae.eval(), X)


def mean_cos_sim(W_dec: Tensor) -> float:
    """OrtSAE's MeanCosSim (eq. 6): mean over latents of the largest cosine to another latent."""
    return float(decoder_max_cosine(W_dec.detach().float()).mean())


def dictionary_metrics(
    W_dec: Tensor,
    others: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    thresholds: Sequence[float] = THRESHOLDS,
    composition_steps: int = 1500,
    progress: bool = True,
) -> dict:
    """All decoder-geometry metrics of one SAE, each beside random unit rows of the same shape:
    `mean_cos_sim`, `composition` (and `*_random`), and per other SAE in `others` the unique-feature
    fraction at 0.2 and the whole curve (`unique_features[name] = {"curve", "random_curve", ...}`)."""
    n, d = W_dec.shape
    control = random_unit_rows(n, d, seed).to(W_dec.device)  # the meta-SAEs train where the decoder lives
    out = {
        "mean_cos_sim": mean_cos_sim(W_dec),
        "mean_cos_sim_random": mean_cos_sim(control),
        "composition": composition_rate(W_dec, steps=composition_steps, seed=seed, progress=progress),
        "composition_random": composition_rate(control, steps=composition_steps, seed=seed, progress=progress),
    }
    unique = {}
    for name, other in (others or {}).items():
        partner_control = random_unit_rows(other.shape[0], other.shape[1], seed + 1).to(other.device)
        curve = unique_feature_curve(W_dec, other, thresholds)
        unique[name] = {
            "unique_at_0.2": unique_feature_fraction(W_dec, other),
            "unique_at_0.2_random": unique_feature_fraction(control, partner_control),
            "curve": curve,
            "random_curve": unique_feature_curve(control, partner_control, thresholds),
        }
    if unique:
        out["unique_features"] = unique
    return out
