"""Gated SAE (Rajamanoharan et al. 2024a): a gate decides which latents fire, a magnitude path
how strongly, sharing encoder directions (Rajamanoharan et al., arXiv 2404.16014).

pi_gate = (x - b_dec) W_enc + b_enc          (W_enc is W_gate, b_enc is b_gate)
f = H(pi_gate) * ReLU((x - b_dec) W_enc * exp(r_mag) + b_mag),  x_hat = f W_dec + b_dec
L = ||x - x_hat||^2 + l1_coefficient * ||ReLU(pi_gate)||_1
    + ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2       (sg = stop-gradient)
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor
from transformers import initialization as init

from .base import SAE, SAEConfig, register


@strict
class GatedSAEConfig(SAEConfig):
    """Args:
    l1_coefficient: lambda of the L1 penalty on the ReLU'd gate pre-activations.
    """

    model_type = "hubsae_gated"
    l1_coefficient: float = 1.0

    def validate_l1(self):
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")

    def loss_weights(self) -> dict[str, float]:
        return {"mse": 1.0, "l1": self.l1_coefficient, "gate_mse": 1.0}


class GatedSAE(SAE):
    config_class = GatedSAEConfig

    def add_parameters(self, config: GatedSAEConfig) -> None:
        self.r_mag = torch.nn.Parameter(torch.empty(config.d_sae))
        self.b_mag = torch.nn.Parameter(torch.empty(config.d_sae))

    @torch.no_grad()
    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.r_mag)
            init.zeros_(self.b_mag)

    def activation(self, pre_acts: Tensor) -> Tensor:
        # (x - b_dec) W_mag = (pi_gate - b_gate) * exp(r_mag): the magnitude path from the gate's pre-acts
        magnitude = torch.relu((pre_acts - self.b_enc) * self.r_mag.exp() + self.b_mag)
        return (pre_acts > 0).to(magnitude.dtype) * magnitude

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        out = super().losses(x, pre_acts, features, x_hat)
        gate = torch.relu(pre_acts)
        out["l1"] = gate.sum(-1).mean()
        x_gate = gate @ self.W_dec.detach() + self.b_dec.detach()
        out["gate_mse"] = (x - x_gate).pow(2).sum(-1).mean()
        return out


register(GatedSAEConfig, GatedSAE)
__all__ = ["GatedSAEConfig", "GatedSAE"]
