"""Switch SAE (Mudide, Engels, Michaud, Tegmark, Schroeder de Witt; ICLR 2025; arXiv 2410.08201).

N expert TopK SAEs of F/N latents each share b_dec; a router sends each token to one expert:

    p(x) = softmax((x - b_router) W_router),  e = argmax_i p_i(x)
    f = p_e(x) * TopK_k(ReLU((x - b_dec) W_enc[:, block e] + b_enc[block e]))   (zero outside block e)
    x_hat = f W_dec + b_dec
    L = ||x - x_hat||^2 + lb_coefficient * d_in * L_lb,   L_lb = N * sum_i frac_i * P_i

frac_i is the fraction of tokens routed to expert i (no gradient) and P_i the mean router
probability of expert i; lb_coefficient = 0.01 as in the official trainer, which also computes AuxK but
does not add it (auxk_coefficient defaults to 0 here; set it to train with AuxK).
The router gate p_e is folded into the features so that `decode(encode(x))` is the reconstruction
and the sparse path works unchanged; gradients reach the router through it.

Expert e owns rows/columns [e*F/N, (e+1)*F/N) of the shared-vocabulary W_enc (d_in, d_sae),
b_enc, W_dec (d_sae, d_in): a Switch SAE's file reads like any other SAE's plus W_router
(d_in, num_experts) and b_router (d_in,). Tokens are grouped by expert and each group meets only
its expert's encoder block, so the encoder costs d_in * F / N per token (plus d_in * N for routing),
unlike the official code, which computes every expert and masks.
"""

import math

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor, nn
from transformers import initialization as init

from .base import SAE, register
from .sparse import SparseCode, decode_rows, topk_losses
from .topk import TopKSAEConfig


@strict
class SwitchSAEConfig(TopKSAEConfig):
    """Args:
    num_experts: N; d_sae must be a multiple of it and k at most d_sae / N.
    lb_coefficient: load-balancing weight; the loss term is weighted lb_coefficient * d_in (official trainer).
    k: active latents per token, all inside the routed expert.
    """

    model_type = "hubsae_switch"
    num_experts: int = 8
    lb_coefficient: float = 0.01
    auxk_coefficient: float = 0.0

    def validate_experts(self):
        if self.num_experts <= 0 or self.d_sae % self.num_experts:
            raise ValueError(f"d_sae={self.d_sae} must be a positive multiple of num_experts={self.num_experts}")
        if self.k > self.expert_size:
            raise ValueError(f"k={self.k} exceeds the expert size d_sae/num_experts={self.expert_size}")
        if self.lb_coefficient < 0:
            raise ValueError(f"lb_coefficient must be >= 0, got {self.lb_coefficient}")

    @property
    def expert_size(self) -> int:
        return self.d_sae // self.num_experts

    def loss_weights(self) -> dict[str, float]:
        return {"mse": 1.0, "auxk": self.auxk_coefficient, "load_balance": self.lb_coefficient * self.d_in}


class SwitchSAE(SAE):
    config_class = SwitchSAEConfig

    def add_parameters(self, config: SwitchSAEConfig) -> None:
        self.W_router = nn.Parameter(torch.empty(config.d_in, config.num_experts))
        self.b_router = nn.Parameter(torch.empty(config.d_in))

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            init.normal_(self.W_router, std=1.0 / math.sqrt(self.config.d_in))
            init.zeros_(self.b_router)

    def route(self, x: Tensor) -> Tensor:
        """Router probabilities (..., num_experts) of normalized inputs."""
        return torch.softmax((x - self.b_router) @ self.W_router, dim=-1)

    def expert_pre_acts(self, x_TD: Tensor, expert_T: Tensor) -> Tensor:
        """Pre-activations (T, F/N) of each token's own expert, one matmul per expert's token group."""
        size, n_exp = self.config.expert_size, self.config.num_experts
        if self.config.subtract_b_dec:
            x_TD = x_TD - self.b_dec
        order = expert_T.argsort(stable=True)
        counts = torch.bincount(expert_T, minlength=n_exp).tolist()
        groups = x_TD[order].split(counts)
        blocks = [
            g @ self.W_enc[:, e * size : (e + 1) * size] + self.b_enc[e * size : (e + 1) * size]
            for e, g in enumerate(groups)
        ]
        return torch.cat(blocks)[torch.argsort(order)]

    def sparse_code(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Route and encode normalized x (T, d_in): (indices, gated values, probs, expert, pre_TE)."""
        probs = self.route(x)
        expert = probs.argmax(-1)
        pre_TE = self.expert_pre_acts(x, expert)
        values, local = pre_TE.topk(self.config.k, dim=-1, sorted=False)
        gate = probs.gather(-1, expert[:, None])
        return local + expert[:, None] * self.config.expert_size, torch.relu(values) * gate, probs, expert, pre_TE

    def encode_sparse(self, x: Tensor) -> SparseCode:
        self.check_input(x)
        x, _ = self.normalize_input(x)
        indices, values, *_ = self.sparse_code(x.reshape(-1, x.shape[-1]))
        lead = x.shape[:-1]
        return SparseCode(indices.reshape(*lead, -1), values.reshape(*lead, -1))

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_sparse(x).to_dense(self.config.d_sae)

    def pre_acts(self, x: Tensor) -> Tensor:
        """Dense (..., d_sae) pre-activations: the routed expert's block, zeros elsewhere."""
        flat = x.reshape(-1, x.shape[-1])
        expert = self.route(flat).argmax(-1)
        return self._dense_pre(self.expert_pre_acts(flat, expert), expert).reshape(*x.shape[:-1], -1)

    def _dense_pre(self, pre_TE: Tensor, expert: Tensor) -> Tensor:
        size = self.config.expert_size
        cols = expert[:, None] * size + torch.arange(size, device=expert.device)
        return SparseCode(cols, pre_TE).to_dense(self.config.d_sae)

    def load_balance_loss(self, probs: Tensor, expert: Tensor) -> Tensor:
        """N * sum_i frac_i * P_i (Switch Transformer); 1 when routing is uniform."""
        n_exp = self.config.num_experts
        frac = torch.bincount(expert, minlength=n_exp).to(probs.dtype) / expert.numel()
        return n_exp * (frac * probs.mean(0)).sum()

    def reconstruct(self, x: Tensor, wants_losses: bool, target: Tensor | None = None, **loss_kwargs):
        lead, flat = x.shape[:-1], x.reshape(-1, x.shape[-1])
        aim = flat if target is None else target.reshape(flat.shape[0], -1)
        indices, values, probs, expert, pre_TE = self.sparse_code(flat)
        x_hat = decode_rows(indices, values, self.W_dec) + self.b_dec
        losses = None
        if wants_losses:
            pre = self._dense_pre(pre_TE, expert)
            dead = loss_kwargs.get("dead_mask")
            losses = topk_losses(aim, pre, x_hat, dead, self.config.resolved_k_aux, self.W_dec)
            losses["load_balance"] = self.load_balance_loss(probs, expert)
        feats = SparseCode(indices, values).to_dense(self.config.d_sae)
        return x_hat.reshape(*lead, -1), feats.reshape(*lead, -1), losses


register(SwitchSAEConfig, SwitchSAE)
__all__ = ["SwitchSAEConfig", "SwitchSAE"]
