"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"), with AuxK.

f = TopK_k(ReLU((x - b_dec) W_enc + b_enc)), x_hat = f W_dec + b_dec   (arXiv 2406.04093).
L = ||x - x_hat||^2 + auxk_coefficient * L_aux, where AuxK reconstructs the residual from the
top-k_aux dead latents (dead = not fired within the trainer's window).

Training forwards (losses computed) go through `hubsae.ops.SparseTopKCode`: the same loss,
gradients and outputs, but only the encoder's forward is a dense GEMM; everything after the
top-k is sparse (set HUBSAE_SPARSE_TRAIN=0 for the plain dense path). A subclass that
overrides any method named in `SPARSE_MATH` keeps the plain path.
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor

from ..ops import announce_path, auxk_from_decoded, inherits_unchanged, sparse_topk_code, sparse_training_enabled
from .base import SAE, SAEConfig, SAEOutput, auxk_loss, register

# the methods whose plain math the sparse training forward reproduces
SPARSE_MATH = ("pre_acts", "activation", "losses", "topk", "_decode_normalized")


@strict
class TopKSAEConfig(SAEConfig):
    """Args:
    k: active latents per token.
    k_aux: dead latents used by AuxK; None means d_in // 2 (dictionary_learning's default).
    auxk_coefficient: weight of the AuxK loss (1/32 in the paper).
    """

    model_type = "hubsae_topk"
    k: int = 32
    k_aux: int | None = None
    auxk_coefficient: float = 1 / 32

    def validate_k(self):
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must satisfy 0 < k <= d_sae={self.d_sae}")
        if self.k_aux is not None and self.k_aux <= 0:
            raise ValueError(f"k_aux must be positive, got {self.k_aux}")

    def loss_weights(self) -> dict[str, float]:
        return {"mse": 1.0, "auxk": self.auxk_coefficient}

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

    # ---- sparse training forward ------------------------------------------------------------

    def sparse_selection(self) -> str | None:
        """Which sparse training selection this class may use ("topk"), or None for the plain path."""
        return "topk" if inherits_unchanged(self, TopKSAE, SPARSE_MATH) else None

    def forward(self, hidden_states: Tensor, compute_losses: bool | None = None, **loss_kwargs) -> SAEOutput:
        wants_losses = compute_losses if compute_losses is not None else self.training
        selection = self.sparse_selection() if wants_losses else None
        if selection is not None:
            enabled = sparse_training_enabled()
            announce_path(type(self).__name__, enabled)
            if enabled:
                return self.sparse_forward(hidden_states, selection == "batch", loss_kwargs.get("dead_mask"))
        return super().forward(hidden_states, compute_losses, **loss_kwargs)

    def sparse_forward(self, hidden_states: Tensor, batch: bool, dead_mask: Tensor | None) -> SAEOutput:
        """`forward` with losses through `SparseTopKCode`: per-token TopK, or BatchTopK when `batch`."""
        self.check_input(hidden_states)
        x, stats = self.normalize_input(hidden_states)
        lead, x_ND = x.shape[:-1], x.reshape(-1, x.shape[-1])
        b_dec = self.b_dec if self.config.subtract_b_dec else None
        decoded_ND, aux_ND, feats_NF, kept = sparse_topk_code(
            x_ND, self.W_enc, self.b_enc, self.W_dec, b_dec, self.config.k, batch, dead_mask, self.config.resolved_k_aux
        )
        if batch:
            self._update_threshold(kept)
        x_hat_ND = decoded_ND + self.b_dec
        losses = {"mse": (x_ND - x_hat_ND).pow(2).sum(-1).mean(), "auxk": auxk_from_decoded(x_ND - x_hat_ND, aux_ND)}
        weights = self.config.loss_weights()
        loss = sum(weights[name] * value for name, value in losses.items())
        x_hat = self.denormalize(x_hat_ND.reshape(*lead, -1), stats)
        return SAEOutput(reconstruction=x_hat, features=feats_NF.reshape(*lead, -1), loss=loss, losses=losses)


register(TopKSAEConfig, TopKSAE)
__all__ = ["TopKSAEConfig", "TopKSAE"]
