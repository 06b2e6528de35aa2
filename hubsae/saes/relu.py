"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, "April 2024 update").

f = ReLU(W_enc^T x + b_enc), x_hat = f W_dec + b_dec,
L = ||x - x_hat||^2 + l1_coefficient * sum_i f_i ||W_dec[i]||  (transformer-circuits.pub/2024/april-update).
No unit-norm decoder constraint and no b_dec subtraction before encoding, as in the update.
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor

from .base import SAE, SAEConfig, register


@strict
class ReLUSAEConfig(SAEConfig):
    """Args:
    l1_coefficient: lambda of the decoder-norm-weighted L1 penalty (warmed up by the trainer).
    """

    model_type = "hubsae_relu"
    l1_coefficient: float = 5.0
    normalize_decoder: bool = False
    subtract_b_dec: bool = False

    def validate_l1(self):
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")

    def loss_weights(self) -> dict[str, float]:
        return {"mse": 1.0, "l1": self.l1_coefficient}


class ReLUSAE(SAE):
    config_class = ReLUSAEConfig

    def _decoder_init_norm(self) -> float:
        return 0.1  # dictionary_learning's April-update init: random directions of norm 0.1

    def activation(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        out = super().losses(x, pre_acts, features, x_hat)
        out["l1"] = (features * self.W_dec.norm(dim=-1)).sum(-1).mean()
        return out


register(ReLUSAEConfig, ReLUSAE)
__all__ = ["ReLUSAEConfig", "ReLUSAE"]
