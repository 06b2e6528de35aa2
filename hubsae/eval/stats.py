"""Per-latent statistics that need no text: direct logit effects and decoder geometry.

The direct logit effect of latent f is W_dec[f] · W_U (the unembedding, (vocab, d_model) as HF
stores it): which output tokens the feature's direction promotes and suppresses when added to the
residual stream. It ignores the final norm's per-channel gain, as an unfolded SAEDashboard does.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class LogitEffects:
    """Top promoted (`pos_*`) and suppressed (`neg_*`) tokens per latent, each (d_sae, n), plus a
    histogram of each latent's effect over the whole vocabulary (`hist_counts (d_sae, bins)`,
    `hist_edges (d_sae, bins + 1)`)."""

    pos_ids: Tensor
    pos_values: Tensor
    neg_ids: Tensor
    neg_values: Tensor
    hist_counts: Tensor
    hist_edges: Tensor


def unembedding(model: nn.Module) -> Tensor:
    """The (vocab, d_model) unembedding matrix of a causal LM."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), Tensor):
        raise ValueError(f"{type(model).__name__} has no output embedding (lm_head) to compute logit effects with")
    return head.weight


@torch.no_grad()
def logit_effects(W_dec: Tensor, W_U: Tensor, n: int = 10, bins: int = 50, chunk: int = 256) -> LogitEffects:
    """Direct logit effect W_dec @ W_U.T, reduced per latent to its top/bottom `n` tokens and a histogram.

    Computed `chunk` latents at a time, so memory is chunk × vocab rather than d_sae × vocab.
    """
    if W_dec.shape[-1] != W_U.shape[-1]:
        raise ValueError(
            f"decoder rows have d={W_dec.shape[-1]} but the unembedding has d={W_U.shape[-1]}; "
            "logit effects need an SAE that writes to the residual stream of this model"
        )
    n = min(n, W_U.shape[0])
    parts: dict[str, list[Tensor]] = {k: [] for k in ("pi", "pv", "ni", "nv", "hc", "he")}
    W_U = W_U.float()
    for start in range(0, W_dec.shape[0], chunk):
        eff_CV = W_dec[start : start + chunk].float() @ W_U.T
        pv, pi = eff_CV.topk(n, dim=-1)
        nv, ni = eff_CV.topk(n, dim=-1, largest=False)
        lo, hi = eff_CV.min(-1).values, eff_CV.max(-1).values
        hi = torch.where(hi > lo, hi, lo + 1e-6)
        # per-row histogram via bucket indices: histc has no batched form
        idx_CV = ((eff_CV - lo[:, None]) / (hi - lo)[:, None] * bins).long().clamp(0, bins - 1)
        counts = torch.zeros(eff_CV.shape[0], bins, dtype=torch.int64, device=eff_CV.device)
        counts.scatter_add_(1, idx_CV, torch.ones_like(idx_CV))
        edges = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, bins + 1, device=eff_CV.device)
        for key, value in zip(parts, (pi, pv, ni, nv, counts, edges), strict=True):
            parts[key].append(value)
    pi, pv, ni, nv, hc, he = (torch.cat(parts[k]).cpu() for k in parts)  # read per latent on the CPU
    return LogitEffects(pi, pv, ni, nv, hc, he)
