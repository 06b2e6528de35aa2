"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"), with AuxK.

f = TopK_k(ReLU((x - b_dec) W_enc + b_enc)), x_hat = f W_dec + b_dec   (arXiv 2406.04093).
L = ||x - x_hat||^2 + auxk_coefficient * L_aux, where AuxK reconstructs the residual from the
top-k_aux dead latents (dead = not fired within the trainer's window).

Training forwards (losses computed) go through `hubsae.ops.SparseTopKCode`: the same loss,
gradients and outputs, but only the encoder's forward is a dense GEMM; everything after the
top-k is sparse (set HUBSAE_SPARSE_TRAIN=0 for the plain dense path). BatchTopK trains through
the same path (`sparse_topk_reconstruct`) with the batch-wide selection.
"""

from huggingface_hub.dataclasses import strict
from torch import Tensor

from ..ops import announce_path, auxk_from_decoded, sparse_topk_code, sparse_training_enabled
from .base import SAE, SAEConfig, register
from .sparse import SparseCode, mse_loss, topk_code, topk_losses


@strict
class TopKSAEConfig(SAEConfig):
    """Args:
    k: active latents per token.
    k_aux: dead latents used by AuxK; None means d_out // 2 (dictionary_learning's default: half
        the reconstructed width).
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
        return min(self.k_aux or self.resolved_d_out // 2, self.d_sae)


class TopKSAE(SAE):
    config_class = TopKSAEConfig

    def activation(self, pre_acts: Tensor) -> Tensor:
        return topk_code(pre_acts, self.config.k).to_dense(self.config.d_sae)

    def encode_sparse(self, x: Tensor) -> SparseCode:
        """The k active latents of each token, (..., k) each; pairs with `decode_sparse`."""
        return per_token_topk(self, x)

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        return topk_losses(x, pre_acts, x_hat, kw.get("dead_mask"), self.config.resolved_k_aux, self.W_dec)

    def training_path(self) -> str:
        """ "sparse" when training forwards run `hubsae.ops.SparseTopKCode`, else "dense"."""
        return "sparse" if sparse_training_enabled() else "dense"

    def reconstruct(self, x: Tensor, wants_losses: bool, target: Tensor | None = None, **loss_kwargs):
        if wants_losses and self.training_path() == "sparse":
            announce_path(type(self).__name__, True)
            dead = loss_kwargs.get("dead_mask")
            x_hat, features, losses, _ = sparse_topk_reconstruct(self, x, False, dead, target)
            return x_hat, features, losses
        return super().reconstruct(x, wants_losses, target, **loss_kwargs)


def per_token_topk(sae: SAE, x: Tensor) -> SparseCode:
    """The k largest ReLU'd pre-activations of each token of x (checked, normalized): the sparse code
    of every per-token TopK selection (TopK, BatchTopK before its threshold exists, Matryoshka)."""
    sae.check_input(x)
    return topk_code(sae.pre_acts(sae.normalize_input(x)[0]), sae.config.k)


def sparse_topk_reconstruct(sae: SAE, x: Tensor, batch: bool, dead_mask: Tensor | None, target: Tensor | None = None):
    """`SAE.reconstruct` with losses through `SparseTopKCode` (per-token TopK, or BatchTopK when `batch`):
    the same values and gradients as the dense path; the losses compare with `target` (None: x).
    Returns (x_hat, features, losses, kept values)."""
    cfg = sae.config
    lead, x_ND = x.shape[:-1], x.reshape(-1, x.shape[-1])
    y_ND = x_ND if target is None else target.reshape(x_ND.shape[0], -1)
    b_dec = sae.b_dec if cfg.subtract_b_dec else None
    decoded_ND, aux_ND, feats_NF, kept = sparse_topk_code(
        x_ND, sae.W_enc, sae.b_enc, sae.W_dec, b_dec, cfg.k, batch, dead_mask, cfg.resolved_k_aux
    )
    x_hat_ND = decoded_ND + sae.b_dec
    losses = {"mse": mse_loss(y_ND, x_hat_ND), "auxk": auxk_from_decoded(y_ND - x_hat_ND, aux_ND)}
    return x_hat_ND.reshape(*lead, -1), feats_NF.reshape(*lead, -1), losses, kept


register(TopKSAEConfig, TopKSAE)
__all__ = ["TopKSAEConfig", "TopKSAE", "per_token_topk", "sparse_topk_reconstruct"]
