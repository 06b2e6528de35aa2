"""Matryoshka SAE (Bussmann, Nabeshima, Karvonen, Nanda, arXiv 2503.17547), on BatchTopK or TopK, with AuxK.

The latents are ordered into groups of sizes s_1..s_G; with prefixes m_g = s_1 + ... + s_g, every
prefix of the dictionary must reconstruct on its own:

    L = sum_g w_g ||x - (f[:m_g] W_dec[:m_g] + b_dec)||^2 + auxk_coefficient * L_aux

w_g = 1/G by default (dictionary_learning's mean); KronSAE's eq. 6 uses w_g = 1 (a plain sum,
`group_weights=[1.0] * G`). The mean is the default because it keeps the loss on the scale of one
MSE, so the AuxK weight (and, without Adam, the learning rate) tuned for BatchTopK carry over; the
sum is the same objective scaled by G, which under Adam mainly weakens AuxK by G.
AuxK reconstructs the full-dictionary residual. `losses()` reports "mse" (the full reconstruction,
weight 0: it is the last prefix, already inside "prefix_mse") next to the weighted "prefix_mse".
The default groups are the official release's [F/16, F/16, F/8, F/4, F/2].
The prefix losses and group checks live in `sparse.py`, shared with KronSAE (groups of m*n multiples).
"""

from huggingface_hub.dataclasses import strict
from torch import Tensor

from .base import SAE, register
from .batchtopk import BatchTopKSAEConfig, add_threshold, batch_topk_code, batch_topk_features, init_threshold
from .sparse import SparseCode, auxk_loss, check_groups, mse_loss, prefix_mse_losses, topk_code, weighted_prefix_mse
from .topk import per_token_topk


def default_group_sizes(d_sae: int) -> list[int]:
    """The official release's [F/16, F/16, F/8, F/4, F/2] (needs F divisible by 16)."""
    if d_sae % 16:
        raise ValueError(f"the default Matryoshka groups need d_sae divisible by 16, got {d_sae}; set group_sizes")
    return [d_sae // 16, d_sae // 16, d_sae // 8, d_sae // 4, d_sae // 2]


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


class MatryoshkaSAE(SAE):
    """Trains through the dense path: every prefix loss reads the dense features."""

    config_class = MatryoshkaSAEConfig

    def add_parameters(self, config: MatryoshkaSAEConfig) -> None:
        add_threshold(self)

    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            init_threshold(self)

    def activation(self, pre_acts: Tensor) -> Tensor:
        if self.config.batch_topk:
            return batch_topk_features(self, pre_acts)
        return topk_code(pre_acts, self.config.k).to_dense(self.config.d_sae)

    def encode_sparse(self, x: Tensor) -> SparseCode:
        if self.config.batch_topk:
            return batch_topk_code(self, x)
        return per_token_topk(self, x)

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        prefix = prefix_mse_losses(x, features, self.W_dec, self.b_dec, self.config.resolved_group_sizes)
        return {
            "mse": mse_loss(x, x_hat),
            "prefix_mse": weighted_prefix_mse(prefix, self.config.group_weights),
            "auxk": auxk_loss(x - x_hat, pre_acts, kw.get("dead_mask"), self.config.resolved_k_aux, self.W_dec),
        }


register(MatryoshkaSAEConfig, MatryoshkaSAE)
__all__ = ["MatryoshkaSAEConfig", "MatryoshkaSAE", "default_group_sizes"]
