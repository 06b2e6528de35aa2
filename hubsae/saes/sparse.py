"""The sparse code every architecture produces, and the math several architectures share.

Every SAE's `encode_sparse(x)` returns a `SparseCode`: the indices of its active latents and their
values, (..., width) each. TopK-style codes have width k; threshold codes (JumpReLU, BatchTopK at
inference) pad every token to the busiest token's count with zero values, which decode to nothing.
The functions below are plain math that architectures call (no class hierarchy to inherit):
per-token TopK, batch-wide TopK and its inference threshold, AuxK, and Matryoshka's prefix losses.
"""

from typing import NamedTuple

import torch
from torch import Tensor, nn


class SparseCode(NamedTuple):
    """Active latents per token: `indices` (..., width) int64 and `values` (..., width)."""

    indices: Tensor
    values: Tensor

    def to_dense(self, d_sae: int) -> Tensor:
        """(..., d_sae) features with zeros for the inactive latents."""
        dense = self.values.new_zeros(*self.values.shape[:-1], d_sae)
        return dense.scatter_(-1, self.indices, self.values)

    @classmethod
    def from_dense(cls, features: Tensor) -> "SparseCode":
        """The non-zero entries of (..., d_sae) features, padded to the busiest token's count."""
        width = int((features != 0).sum(-1).max()) if features.numel() else 0
        indices = features.abs().topk(width, dim=-1, sorted=False).indices
        return cls(indices, features.gather(-1, indices))


def decode_rows(indices: Tensor, values: Tensor, W_dec: Tensor) -> Tensor:
    """sum_j values_j * W_dec[indices_j] for each token, no bias: (..., width) -> (..., d_in).

    O(width * d_in) a token (one fused gather-sum) instead of O(d_sae * d_in) for a dense decode.
    """
    lead, width = indices.shape[:-1], indices.shape[-1]
    if width == 0:
        return W_dec.new_zeros(*lead, W_dec.shape[-1])
    rows = nn.functional.embedding_bag(
        indices.reshape(-1, width), W_dec, per_sample_weights=values.reshape(-1, width).to(W_dec.dtype), mode="sum"
    )
    return rows.reshape(*lead, W_dec.shape[-1])


def mse_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """||x - x_hat||^2 summed over d_in, averaged over tokens: the reconstruction loss of every SAE."""
    return (x - x_hat).pow(2).sum(-1).mean()


def weighted_loss(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum_name weights[name] * losses[name]: the one place the training objective is assembled."""
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise KeyError(f"no weight for the loss term(s) {missing}; loss_weights() names {sorted(weights)}")
    return sum(weights[name] * value for name, value in losses.items())


# ---- TopK-style selection ------------------------------------------------------------------


def topk_code(pre_acts: Tensor, k: int) -> SparseCode:
    """The k largest pre-activations of each token, ReLU'd (Gao et al., arXiv 2406.04093, eq. 3)."""
    values, indices = pre_acts.topk(k, dim=-1, sorted=False)
    return SparseCode(indices, torch.relu(values))


def batch_topk(pre_acts: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """BatchTopK (Bussmann et al., arXiv 2412.06410, §3): keep the k * n_tokens largest ReLU'd
    activations of the whole batch. Returns the dense features and the kept values."""
    flat = torch.relu(pre_acts.reshape(-1, pre_acts.shape[-1]))
    n_keep = min(k * flat.shape[0], flat.numel())
    values, indices = flat.flatten().topk(n_keep, sorted=False)
    dense = torch.zeros_like(flat).flatten().scatter_(0, indices, values)
    return dense.reshape(pre_acts.shape), values


@torch.no_grad()
def update_threshold(threshold: Tensor, kept: Tensor, weight: float) -> None:
    """Move the threshold a fraction `weight` toward the smallest activation a BatchTopK batch kept,
    in place; a negative threshold means "not estimated yet" and takes the first batch's value."""
    positive = kept[kept > 0]
    if positive.numel() == 0:
        return
    batch_min = positive.min().to(threshold.dtype)
    if threshold < 0:
        threshold.copy_(batch_min)
    else:
        threshold.lerp_(batch_min, weight)


def threshold_code(pre_acts: Tensor, threshold: Tensor) -> Tensor:
    """Inference features of a BatchTopK SAE: a JumpReLU with one global threshold."""
    return pre_acts * (pre_acts > threshold)


# ---- auxiliary losses ------------------------------------------------------------------------


def auxk_loss(residual: Tensor, pre_acts: Tensor, dead_mask: Tensor | None, k_aux: int, W_dec: Tensor) -> Tensor:
    """AuxK (Gao et al., arXiv 2406.04093, §A.2): the top-k_aux dead latents reconstruct the detached
    residual e. Returns ||e - e_hat||^2 summed over d_in and averaged over tokens, the same units as
    hubsae's MSE, as in the BatchTopK reference code; 0 when no latent is dead."""
    if dead_mask is None or not bool(dead_mask.any()):
        return pre_acts.new_zeros(())
    e = residual.detach().reshape(-1, residual.shape[-1])
    a = pre_acts.reshape(-1, pre_acts.shape[-1])
    k = min(k_aux, int(dead_mask.sum()))
    dead_acts = torch.where(dead_mask, torch.relu(a), torch.zeros_like(a))
    vals, idx = dead_acts.topk(k, dim=-1, sorted=False)
    return mse_loss(e, decode_rows(idx, vals, W_dec))


def topk_losses(x: Tensor, pre_acts: Tensor, x_hat: Tensor, dead_mask: Tensor | None, k_aux: int, W_dec: Tensor):
    """The TopK family's losses: {"mse", "auxk"} (AuxK on the reconstruction's residual)."""
    return {"mse": mse_loss(x, x_hat), "auxk": auxk_loss(x - x_hat, pre_acts, dead_mask, k_aux, W_dec)}


# ---- Matryoshka prefixes ---------------------------------------------------------------------


def check_groups(group_sizes: list[int], group_weights: list[float] | None, d_sae: int, multiple: int = 1) -> None:
    """Raise a ValueError naming the problem unless the groups tile d_sae in multiples of `multiple`."""
    if not group_sizes or any(s <= 0 for s in group_sizes):
        raise ValueError(f"group_sizes must be a non-empty list of positive sizes, got {group_sizes}")
    if sum(group_sizes) != d_sae:
        raise ValueError(f"group_sizes {group_sizes} sum to {sum(group_sizes)}, not d_sae={d_sae}")
    if any(s % multiple for s in group_sizes):
        raise ValueError(f"every group size must be a multiple of {multiple} (m*n, one head), got {group_sizes}")
    if group_weights is not None and (len(group_weights) != len(group_sizes) or min(group_weights) < 0):
        raise ValueError(f"group_weights {group_weights} must be {len(group_sizes)} non-negative numbers")


def prefix_mse_losses(x: Tensor, features: Tensor, W_dec: Tensor, b_dec: Tensor, group_sizes: list[int]) -> Tensor:
    """Per-prefix reconstruction losses (G,): mean over tokens of ||x - f[:m_g] W_dec[:m_g] - b_dec||^2.

    Adds one group's decoder contribution at a time, so all G losses cost one full decode.
    """
    x_hat = b_dec.expand_as(x)
    losses, start = [], 0
    for size in group_sizes:
        x_hat = x_hat + features[..., start : start + size] @ W_dec[start : start + size]
        losses.append((x - x_hat).pow(2).sum(-1).mean())
        start += size
    return torch.stack(losses)


def weighted_prefix_mse(losses: Tensor, group_weights: list[float] | None) -> Tensor:
    """The mean of the prefix losses, or their sum weighted by `group_weights`."""
    if group_weights is None:
        return losses.mean()
    return (losses * losses.new_tensor(group_weights)).sum()
