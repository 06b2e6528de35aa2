"""JumpReLU SAE (Rajamanoharan et al. 2024b, "Jumping Ahead").

f = a * H(a - theta) with a per-latent learned threshold theta > 0 (arXiv 2407.14435).
L = ||x - x_hat||^2 + l0_coefficient * sum_i H(a_i - theta_i), or dictionary_learning's
(L0 / target_l0 - 1)^2 when `sparsity_loss="target_l0"`.
The step has no gradient; straight-through pseudo-derivatives with a rectangle kernel of width
`bandwidth` give theta one: d/dtheta JumpReLU = -(theta/eps) K((a - theta)/eps),
d/dtheta H = -(1/eps) K((a - theta)/eps).
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor
from transformers import initialization as init

from .base import SAE, SAEConfig, register

SPARSITY_LOSSES = ("l0", "target_l0")


def _rectangle(u: Tensor) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


def _reduce_to(grad: Tensor, like: Tensor) -> Tensor:
    return grad.reshape(-1, like.shape[-1]).sum(0)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(a, theta)
        ctx.bandwidth = bandwidth
        return a * (a > theta)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_a = grad * (a > theta)
        grad_theta = -(theta / eps) * _rectangle((a - theta) / eps) * grad
        return grad_a, _reduce_to(grad_theta, theta), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(a, theta)
        ctx.bandwidth = bandwidth
        return (a > theta).to(a.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * _rectangle((a - theta) / eps) * grad
        return torch.zeros_like(a), _reduce_to(grad_theta, theta), None


def jumprelu(a: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    return _JumpReLU.apply(a, theta, bandwidth)


def step(a: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    return _Step.apply(a, theta, bandwidth)


@strict
class JumpReLUSAEConfig(SAEConfig):
    """Args:
    bandwidth: epsilon of the straight-through estimators (0.001 in the paper).
    threshold_init: initial theta for every latent (0.001, paper App. I).
    l0_coefficient: lambda of the sparsity penalty.
    sparsity_loss: "l0" (the paper) or "target_l0" ((L0/target_l0 - 1)^2, dictionary_learning).
    target_l0: the L0 aimed at by "target_l0".
    """

    model_type = "hubsae_jumprelu"
    bandwidth: float = 0.001
    threshold_init: float = 0.001
    l0_coefficient: float = 1.0
    sparsity_loss: str = "l0"
    target_l0: float | None = None

    def validate_jumprelu(self):
        if self.bandwidth <= 0 or self.threshold_init <= 0:
            raise ValueError(f"bandwidth and threshold_init must be > 0, got {self.bandwidth}, {self.threshold_init}")
        if self.sparsity_loss not in SPARSITY_LOSSES:
            raise ValueError(f"sparsity_loss={self.sparsity_loss!r} is not one of {SPARSITY_LOSSES}")
        if self.sparsity_loss == "target_l0" and not (self.target_l0 and self.target_l0 > 0):
            raise ValueError("sparsity_loss='target_l0' needs a positive target_l0")

    def loss_weights(self) -> dict[str, float]:
        return {"mse": 1.0, "l0": self.l0_coefficient}


class JumpReLUSAE(SAE):
    config_class = JumpReLUSAEConfig

    def add_parameters(self, config: JumpReLUSAEConfig) -> None:
        self.threshold = torch.nn.Parameter(torch.empty(config.d_sae))

    @torch.no_grad()
    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            init.constant_(self.threshold, self.config.threshold_init)

    def activation(self, pre_acts: Tensor) -> Tensor:
        return jumprelu(pre_acts, self.threshold, self.config.bandwidth)

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        out = super().losses(x, pre_acts, features, x_hat)
        l0 = step(pre_acts, self.threshold, self.config.bandwidth).sum(-1).mean()
        if self.config.sparsity_loss == "target_l0":
            l0 = (l0 / self.config.target_l0 - 1).pow(2)
        out["l0"] = l0
        return out


register(JumpReLUSAEConfig, JumpReLUSAE)
__all__ = ["JumpReLUSAEConfig", "JumpReLUSAE", "jumprelu", "step"]
