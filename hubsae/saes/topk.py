"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"), with AuxK.

f = TopK_k(ReLU((x - b_dec) W_enc + b_enc)), x_hat = f W_dec + b_dec   (papers.md §4.2).
L = ||x - x_hat||^2 + aux_coefficient * L_aux, where AuxK reconstructs the residual from the
top-k_aux dead latents (dead = not fired within the trainer's window).
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor

from .base import SAE, SAEConfig, auxk_loss, register


@strict
class TopKSAEConfig(SAEConfig):
    """Args:
    k: active latents per token.
    k_aux: dead latents used by AuxK; None means d_in // 2 (dictionary_learning's default).
    aux_coefficient: weight of the AuxK loss (1/32 in the paper).
    """

    model_type = "hubsae_topk"
    k: int = 32
    k_aux: int | None = None
    aux_coefficient: float = 1 / 32

    def validate_k(self):
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must satisfy 0 < k <= d_sae={self.d_sae}")
        if self.k_aux is not None and self.k_aux <= 0:
            raise ValueError(f"k_aux must be positive, got {self.k_aux}")

    def loss_weights(self) -> dict[str, float]:
        return {"mse": 1.0, "auxk": self.aux_coefficient}

    @property
    def resolved_k_aux(self) -> int:
        return min(self.k_aux or self.d_in // 2, self.d_sae)


class TopKSAE(SAE):
    config_class = TopKSAEConfig

    def topk(self, pre_acts: Tensor) -> tuple[Tensor, Tensor]:
        """The k largest ReLU'd pre-activations per token: (values, indices), each (..., k)."""
        values, indices = pre_acts.topk(self.config.k, dim=-1, sorted=False)
        return torch.relu(values), indices

    def activation(self, pre_acts: Tensor) -> Tensor:
        values, indices = self.topk(pre_acts)
        return torch.zeros_like(pre_acts).scatter_(-1, indices, values)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(indices, values) of the k active latents, each (..., k); pairs with `decode_sparse`."""
        self.check_input(x)
        x, _ = self.normalize_input(x)
        values, indices = self.topk(self.pre_acts(x))
        return indices, values

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        out = super().losses(x, pre_acts, features, x_hat)
        out["auxk"] = auxk_loss(x - x_hat, pre_acts, kw.get("dead_mask"), self.config.resolved_k_aux, self.W_dec)
        return out


register(TopKSAEConfig, TopKSAE)
__all__ = ["TopKSAEConfig", "TopKSAE"]
