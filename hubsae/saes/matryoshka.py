"""Matryoshka SAE (Bussmann, Nabeshima, Karvonen, Nanda 2025), on BatchTopK or TopK, with AuxK.

The latents are ordered into groups of sizes s_1..s_G; with prefixes m_g = s_1 + ... + s_g, every
prefix of the dictionary must reconstruct on its own (papers.md §4.6):

    L = sum_g w_g ||x - (f[:m_g] W_dec[:m_g] + b_dec)||^2 + auxk_coefficient * L_aux

w_g = 1/G by default (dictionary_learning's mean); KronSAE's eq. 6 uses w_g = 1 (a plain sum,
`group_weights=[1.0] * G`). The mean is the default because it keeps the loss on the scale of one
MSE, so the AuxK weight (and, without Adam, the learning rate) tuned for BatchTopK carry over; the
sum is the same objective scaled by G, which under Adam mainly weakens AuxK by G.
AuxK reconstructs the full-dictionary residual. `losses()` reports "mse" (the full reconstruction,
weight 0: it is the last prefix, already inside "prefix_mse") next to the weighted "prefix_mse".
The default groups are the official release's [F/16, F/16, F/8, F/4, F/2].
`prefix_mse_losses` and `check_groups` are shared with KronSAE (its groups are multiples of m*n).
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor

from .base import SAE, auxk_loss, register
from .batchtopk import BatchTopKSAE, BatchTopKSAEConfig


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


def default_group_sizes(d_sae: int) -> list[int]:
    """The official release's [F/16, F/16, F/8, F/4, F/2] (needs F divisible by 16)."""
    if d_sae % 16:
        raise ValueError(f"the default Matryoshka groups need d_sae divisible by 16, got {d_sae}; set group_sizes")
    return [d_sae // 16, d_sae // 16, d_sae // 8, d_sae // 4, d_sae // 2]


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
    if group_weights is None:
        return losses.mean()
    return (losses * losses.new_tensor(group_weights)).sum()


@strict
class MatryoshkaSAEConfig(BatchTopKSAEConfig):
    """Args:
    group_sizes: sizes of the nested groups, summing to d_sae; None = [F/16, F/16, F/8, F/4, F/2].
    group_weights: weight of each prefix loss; None = 1/G each (dictionary_learning).
    batch_topk: BatchTopK in training (the paper); False = per-token TopK throughout.
    """

    model_type = "hubsae_matryoshka"
    group_sizes: list[int] | None = None
    group_weights: list[float] | None = None
    batch_topk: bool = True

    def validate_groups(self):
        check_groups(self.resolved_group_sizes, self.group_weights, self.d_sae)

    @property
    def resolved_group_sizes(self) -> list[int]:
        return list(self.group_sizes) if self.group_sizes is not None else default_group_sizes(self.d_sae)

    def loss_weights(self) -> dict[str, float]:
        return {"mse": 0.0, "prefix_mse": 1.0, "auxk": self.auxk_coefficient}


class MatryoshkaSAE(BatchTopKSAE):
    config_class = MatryoshkaSAEConfig

    def activation(self, pre_acts: Tensor) -> Tensor:
        if self.config.batch_topk:
            return super().activation(pre_acts)
        values, indices = self.topk(pre_acts)
        return torch.zeros_like(pre_acts).scatter_(-1, indices, values)

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        out = SAE.losses(self, x, pre_acts, features, x_hat)
        prefix = prefix_mse_losses(x, features, self.W_dec, self.b_dec, self.config.resolved_group_sizes)
        out["prefix_mse"] = weighted_prefix_mse(prefix, self.config.group_weights)
        out["auxk"] = auxk_loss(x - x_hat, pre_acts, kw.get("dead_mask"), self.config.resolved_k_aux, self.W_dec)
        return out


register(MatryoshkaSAEConfig, MatryoshkaSAE)
__all__ = ["MatryoshkaSAEConfig", "MatryoshkaSAE", "prefix_mse_losses", "check_groups"]
