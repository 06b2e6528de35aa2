"""KronSAE (Kurochkin et al., arXiv 2505.22255 v3): Kronecker-factorized latents composed by mAND.

h heads; head k reads the input through a base P^k (m x d) and an extension Q^k (n x d). All of
them come from ONE fused matmul, so the encoder costs d*h*(m+n) per token, never d*F:

    [u^k; v^k] = x W_enc + b_enc      W_enc (d_in, h*(m+n)): head k's columns k(m+n) .. k(m+n)+m-1
                                       are P^k's rows (base), the next n are Q^k's (extension)
    z_{k,i,j} = mAND(u^k_i, v^k_j) = sqrt(u_i v_j + eps) if u_i > 0 and v_j > 0, else 0
    post-latent index = k*m*n + i*n + j  (the paper's App. H order), F = d_sae = h*m*n
    f = TopK_k(z) over all F post-latents of a token (global, not per head), x_hat = f W_dec + b_dec

Training and encoding run the sparse Kron path (`hubsae.ops.kron`): a head's largest score is
found from its factors' extremes, the k winners lie in the k heads with the largest such maxima,
so only k*m*n pairs are scored; decode and backward touch the k winners and their <= 2k factors
only. The result is TopK over all F post-latents, the lower index winning ties (as `dense_reconstruct`,
the reference path kept for HUBSAE_SPARSE_TRAIN=0). JumpReLU thresholds each of the F post-latents
and keeps the dense path (logged once).
`eps` is App. H's guard (1e-5): it bounds d z / d u = v / (2 sqrt(uv + eps)) as u -> 0+. Unlike the
listing, inactive pairs are exactly 0 (the listing leaves sqrt(eps) there), so codes stay sparse.
Parameters: W_enc (d_in, h*(m+n)) and b_enc (h*(m+n),), unlike the other architectures'
(d_in, d_sae); W_dec (d_sae, d_in) and b_dec keep the shared vocabulary of the other architectures.

Init (§1.3): W_enc ~ N(0, 1) / sqrt(2F), zero biases, decoder row (k,i,j) = P^k_i + Q^k_j
normalized to unit norm. Like App. H, b_dec is not subtracted before encoding and the decoder
is not renormalized during training (both are config switches). Loss: MSE + AuxK/32.
Composes with Matryoshka groups (multiples of m*n, so no head straddles two groups) and with
JumpReLU in place of TopK (`activation="jumprelu"`), as in the paper; `composition` selects the
Table 1 ablation: "mand", "relu_prod" (ReLU(u) ReLU(v)) or "raw_prod" (u v).
"""

import itertools
import math

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor, nn
from transformers import initialization as init

from ..ops import ENV_SWITCH, sparse_training_enabled
from ..ops.kron import (
    COMPOSITIONS,
    announce_kron_path,
    finalize,
    grouped_decode,
    keyed_topk,
    kron_code,
    pair_scores,
    workspace_rows,
)
from ..ops.sparse_coding import auxk_from_decoded
from .base import SAE, register
from .jumprelu import jumprelu, step
from .sparse import (
    SparseCode,
    auxk_loss,
    check_groups,
    decode_rows,
    mse_loss,
    prefix_mse_losses,
    topk_code,
    weighted_prefix_mse,
)
from .topk import TopKSAEConfig


def mand(u: Tensor, v: Tensor, eps: float = 1e-5) -> Tensor:
    """mAND(u, v) = sqrt(u v + eps) where u > 0 and v > 0, else exactly 0; broadcasts u against v."""
    return finalize(pair_scores(u, v, "mand"), "mand", eps)


def kron_flops(d_in: int, num_heads: int, m: int, n: int, k: int) -> int:
    """Forward FLOPs per token, the paper's eq. 7: d h (m+n) + m n h + k d (encoder, mAND, sparse decoder)."""
    return d_in * num_heads * (m + n) + m * n * num_heads + k * d_in


def topk_flops(d_in: int, d_sae: int, k: int) -> int:
    """Forward FLOPs per token of a TopK SAE (eq. 7): d F + k d."""
    return d_in * d_sae + k * d_in


class GlobalTopK:
    """The paper's selection: a global TopK over all F post-latents, AuxK for the dead ones. Trains and
    encodes through the sparse Kron path (only the k heads with the largest maxima are scored)."""

    sparse = True
    sparsity_loss = "auxk"
    dense_reason = None

    def add_parameters(self, sae: SAE) -> None:
        pass

    def init(self, sae: SAE) -> None:
        pass

    def weight(self, config: "KronSAEConfig") -> float:
        return config.auxk_coefficient

    def activation(self, sae: SAE, pre_acts: Tensor) -> Tensor:
        return topk_code(pre_acts, sae.config.k).to_dense(sae.config.d_sae)

    def penalty(self, sae: SAE, x: Tensor, pre_acts: Tensor, x_hat: Tensor, dead_mask: Tensor | None) -> Tensor:
        return auxk_loss(x - x_hat, pre_acts, dead_mask, sae.config.resolved_k_aux, sae.W_dec)


class JumpReLUThresholds:
    """The paper's JumpReLU variant: a learned threshold per post-latent and an L0 penalty. Its loss and
    threshold gradient read all F post-latents, so it trains through the dense path."""

    sparse = False
    sparsity_loss = "l0"
    dense_reason = "JumpReLU thresholds every post-latent (its L0 loss and threshold gradient read all F)"

    def add_parameters(self, sae: SAE) -> None:
        sae.threshold = nn.Parameter(torch.empty(sae.config.d_sae))

    def init(self, sae: SAE) -> None:
        init.constant_(sae.threshold, sae.config.threshold_init)

    def weight(self, config: "KronSAEConfig") -> float:
        return config.l0_coefficient

    def activation(self, sae: SAE, pre_acts: Tensor) -> Tensor:
        return jumprelu(pre_acts, sae.threshold, sae.config.bandwidth)

    def penalty(self, sae: SAE, x: Tensor, pre_acts: Tensor, x_hat: Tensor, dead_mask: Tensor | None) -> Tensor:
        return step(pre_acts, sae.threshold, sae.config.bandwidth).sum(-1).mean()


SELECTIONS = {"topk": GlobalTopK(), "jumprelu": JumpReLUThresholds()}


@strict
class KronSAEConfig(TopKSAEConfig):
    """Args:
    num_heads, m, n: h heads of m base and n extension pre-latents; d_sae must equal h*m*n.
    composition: "mand" (the paper), "relu_prod" or "raw_prod" (Table 1 ablations).
    mand_eps: the guard inside mAND's square root (App. H: 1e-5); 0 gives the exact sqrt(uv).
    activation: "topk" (global TopK with AuxK) or "jumprelu" (per-post-latent threshold, L0 loss).
    group_sizes, group_weights: Matryoshka groups (multiples of m*n); None = no Matryoshka loss.
    bandwidth, threshold_init, l0_coefficient: JumpReLU's settings (see jumprelu.py).
    """

    model_type = "hubsae_kron"
    d_sae: int = 256
    num_heads: int = 32
    m: int = 2
    n: int = 4
    composition: str = "mand"
    mand_eps: float = 1e-5
    activation: str = "topk"
    group_sizes: list[int] | None = None
    group_weights: list[float] | None = None
    bandwidth: float = 0.001
    threshold_init: float = 0.001
    l0_coefficient: float = 1.0
    subtract_b_dec: bool = False
    normalize_decoder: bool = False

    def validate_kron(self):
        if min(self.num_heads, self.m, self.n) <= 0:
            raise ValueError(f"num_heads, m, n must be positive, got {self.num_heads}, {self.m}, {self.n}")
        if self.num_heads * self.m * self.n != self.d_sae:
            raise ValueError(
                f"KronSAE needs d_sae = num_heads*m*n, got d_sae={self.d_sae} but "
                f"{self.num_heads}*{self.m}*{self.n}={self.num_heads * self.m * self.n}"
            )
        if self.composition not in COMPOSITIONS:
            raise ValueError(f"composition={self.composition!r} is not one of {COMPOSITIONS}")
        if self.activation not in SELECTIONS:
            raise ValueError(f"activation={self.activation!r} is not one of {tuple(SELECTIONS)}")
        if self.mand_eps < 0 or self.bandwidth <= 0 or self.threshold_init <= 0:
            raise ValueError("mand_eps must be >= 0, bandwidth and threshold_init > 0")
        if self.group_sizes is not None:
            check_groups(self.group_sizes, self.group_weights, self.d_sae, multiple=self.m * self.n)

    @property
    def encoder_width(self) -> int:
        return self.num_heads * (self.m + self.n)

    def loss_weights(self) -> dict[str, float]:
        weights = {"mse": 1.0}
        if self.group_sizes is not None:
            weights = {"mse": 0.0, "prefix_mse": 1.0}
        selection = SELECTIONS[self.activation]
        return {**weights, selection.sparsity_loss: selection.weight(self)}

    def flops_per_token(self) -> int:
        return kron_flops(self.d_in, self.num_heads, self.m, self.n, self.k)


class KronSAE(SAE):
    config_class = KronSAEConfig

    @property
    def selection(self) -> GlobalTopK | JumpReLUThresholds:
        """How post-latents become features (`activation` in the config), chosen once."""
        return SELECTIONS[self.config.activation]

    def add_parameters(self, config: KronSAEConfig) -> None:
        SELECTIONS[config.activation].add_parameters(self)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if module is not self:
            return
        cfg = self.config
        init.normal_(self.W_enc, std=1.0 / math.sqrt(2.0 * cfg.d_sae))
        P, Q = self.parents()
        dec = (P[:, :, None, :] + Q[:, None, :, :]).reshape(cfg.d_sae, cfg.d_in)
        init.copy_(self.W_dec, dec / dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        init.zeros_(self.b_enc)
        init.zeros_(self.b_dec)
        self.selection.init(self)

    def workspace(self, n_tok: int) -> Tensor | None:
        """A (`workspace_rows`, n_tok) buffer for the encoder output and head maxima, kept across CPU training steps.

        A fresh (N, h*(m+n)) tensor each step costs its page faults (on the CPU a large allocation
        is new memory from the OS: ~0.3 ms per MiB here). None on CUDA (its caching allocator reuses
        memory already), without autograd (inference batches may be of any size) and under autocast
        (no out= there). One buffer per SAE: two threads must not run its training forward at once.
        """
        W, cfg = self.W_enc, self.config
        if W.device.type != "cpu" or not (torch.is_grad_enabled() and W.requires_grad):
            return None
        if torch.is_autocast_enabled("cpu"):
            return None
        rows = workspace_rows(cfg.num_heads, cfg.m, cfg.n)
        buffer = self.__dict__.get("_workspace")
        if buffer is None or buffer.numel() < rows * n_tok or buffer.dtype != W.dtype:
            buffer = self.__dict__["_workspace"] = torch.empty(rows * n_tok, dtype=W.dtype)
        return buffer[: rows * n_tok].view(rows, n_tok)

    def parents(self) -> tuple[Tensor, Tensor]:
        """Encoder rows of the pre-latents: base P (h, m, d_in) and extension Q (h, n, d_in)."""
        cfg = self.config
        rows = self.W_enc.T.reshape(cfg.num_heads, cfg.m + cfg.n, cfg.d_in)
        return rows[:, : cfg.m], rows[:, cfg.m :]

    def pre_latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The fused encoder: (u (..., h, m), v (..., h, n)) from one (d_in, h*(m+n)) matmul."""
        if self.config.subtract_b_dec:
            x = x - self.b_dec
        uv = (x @ self.W_enc + self.b_enc).unflatten(-1, (self.config.num_heads, self.config.m + self.config.n))
        return uv[..., : self.config.m], uv[..., self.config.m :]

    def pair_scores(self, x: Tensor) -> Tensor:
        """`pair_scores` of all post-latents (..., h*m*n), in the order k*m*n + i*n + j."""
        u, v = self.pre_latents(x)
        return pair_scores(u[..., :, None], v[..., None, :], self.config.composition).flatten(-3)  # (..., h, m, n)

    def pre_acts(self, x: Tensor) -> Tensor:
        """Post-latent pre-activations z (..., h*m*n) in the order k*m*n + i*n + j."""
        return finalize(self.pair_scores(x), self.config.composition, self.config.mand_eps)

    def activation(self, pre_acts: Tensor) -> Tensor:
        return self.selection.activation(self, pre_acts)

    def sparse_topk(self, scores: Tensor) -> SparseCode:
        """Dense reference: the global TopK over all F scores (lower index first on ties, like the
        sparse path), with mAND's sqrt applied to the k winners only."""
        flat = scores.reshape(-1, scores.shape[-1])
        positions = keyed_topk(flat.detach(), torch.arange(flat.shape[-1], device=flat.device), self.config.k)
        top = flat.gather(1, positions).reshape(*scores.shape[:-1], -1)
        return SparseCode(
            positions.view_as(top), torch.relu(finalize(top, self.config.composition, self.config.mand_eps))
        )

    def training_path(self) -> str:
        """ "sparse" (the Kron path of `hubsae.ops.kron`) or "dense: <why>"."""
        if self.selection.dense_reason:
            return f"dense: {self.selection.dense_reason}"
        if not sparse_training_enabled():
            return f"dense: {ENV_SWITCH}=0"
        return "sparse"

    def kron_code(self, x_ND: Tensor, dead_mask: Tensor | None = None, k_aux: int = 0):
        """`hubsae.ops.kron.kron_code` on flattened normalized x: (values, indices, aux values, aux indices)."""
        cfg = self.config
        x_in = x_ND - self.b_dec if cfg.subtract_b_dec else x_ND
        shape = (cfg.num_heads, cfg.m, cfg.n, cfg.k)
        work = self.workspace(x_in.shape[0])
        return kron_code(x_in, self.W_enc, self.b_enc, shape, cfg.composition, cfg.mand_eps, dead_mask, k_aux, work)

    def encode_sparse(self, x: Tensor) -> SparseCode:
        """The active post-latents, (..., k) each; pairs with `decode_sparse`.

        TopK selects through the head maxima (`hubsae.ops.kron`), never scoring all F post-latents.
        With JumpReLU the width is the largest L0 over the given tokens (shorter codes padded with
        zero values), since a threshold code has no fixed k.
        """
        if not self.selection.sparse:
            return SparseCode.from_dense(self.encode(x))
        self.check_input(x)
        x_norm = self.normalize_input(x)[0]
        values, indices, _, _ = self.kron_code(x_norm.reshape(-1, self.config.d_in))
        lead = (*x.shape[:-1], self.config.k)
        return SparseCode(indices.view(lead), values.view(lead))

    def encode(self, x: Tensor) -> Tensor:
        if not self.selection.sparse:
            return super().encode(x)
        return self.encode_sparse(x).to_dense(self.config.d_sae)

    def reconstruct(self, x: Tensor, wants_losses: bool, target: Tensor | None = None, **loss_kwargs):
        """TopK runs the sparse Kron path (selection through head maxima, k-sparse decode and
        backward); JumpReLU, or HUBSAE_SPARSE_TRAIN=0, a dense one (logged once)."""
        if target is not None:  # neither path decodes to another activation yet
            raise NotImplementedError(
                f"{type(self).__name__}.reconstruct takes no target=, so it cannot be trained as a transcoder yet"
            )
        path = self.training_path()
        if wants_losses:
            announce_kron_path(type(self).__name__, path)
        if path == "sparse":
            return self.sparse_reconstruct(x, wants_losses, loss_kwargs.get("dead_mask"))
        if not self.selection.sparse:
            return super().reconstruct(x, wants_losses, **loss_kwargs)
        return self.dense_reconstruct(x, wants_losses, **loss_kwargs)

    def sparse_reconstruct(self, x: Tensor, wants_losses: bool, dead_mask: Tensor | None):
        """Through `hubsae.ops.kron`: same losses and gradients as `dense_reconstruct`, O(k) per token
        after the encoder GEMM; the features come back as a detached `SparseCode`, never (N, F)."""
        cfg = self.config
        lead, x_ND = x.shape[:-1], x.reshape(-1, cfg.d_in)
        k_aux = cfg.resolved_k_aux if wants_losses else 0
        values, indices, aux_values, aux_indices = self.kron_code(x_ND, dead_mask, k_aux)
        bounds = list(itertools.accumulate(cfg.group_sizes))[:-1] if cfg.group_sizes and wants_losses else None
        parts_GND = grouped_decode(indices, values, self.W_dec, bounds)  # each Matryoshka group's decode
        x_hat_ND = parts_GND.sum(0) + self.b_dec
        losses = None
        if wants_losses:
            losses = {"mse": mse_loss(x_ND, x_hat_ND)}
            if bounds is not None:
                prefixes = parts_GND.cumsum(0) + self.b_dec  # (G, N, d): reconstruction of each prefix
                prefix = (x_ND - prefixes).pow(2).sum(-1).mean(-1)
                losses["prefix_mse"] = weighted_prefix_mse(prefix, cfg.group_weights)
            aux_ND = grouped_decode(aux_indices, aux_values, self.W_dec)[0] if aux_indices is not None else None
            losses["auxk"] = auxk_from_decoded(x_ND - x_hat_ND, aux_ND)
        code = SparseCode(indices.reshape(*lead, -1), values.detach().reshape(*lead, -1))
        return x_hat_ND.reshape(*lead, cfg.d_in), code, losses

    def dense_reconstruct(self, x: Tensor, wants_losses: bool, **loss_kwargs):
        """The reference path: (N, F) pair scores, a TopK over all of them, dense features."""
        scores = self.pair_scores(x)
        code = self.sparse_topk(scores)
        x_hat = decode_rows(code.indices, code.values, self.W_dec) + self.b_dec
        feats = code.to_dense(self.config.d_sae)
        losses = None
        if wants_losses:
            dead = loss_kwargs.get("dead_mask")
            pre = self.pre_acts(x) if dead is not None and bool(dead.any()) else scores  # AuxK reads it only then
            losses = self.losses(x, pre, feats, x_hat, **loss_kwargs)
        return x_hat, feats, losses

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        cfg = self.config
        out = {"mse": mse_loss(x, x_hat)}
        if cfg.group_sizes is not None:
            prefix = prefix_mse_losses(x, features, self.W_dec, self.b_dec, list(cfg.group_sizes))
            out["prefix_mse"] = weighted_prefix_mse(prefix, cfg.group_weights)
        out[self.selection.sparsity_loss] = self.selection.penalty(self, x, pre_acts, x_hat, kw.get("dead_mask"))
        return out


register(KronSAEConfig, KronSAE)
__all__ = ["KronSAEConfig", "KronSAE", "mand", "pair_scores", "finalize", "kron_flops", "topk_flops"]
