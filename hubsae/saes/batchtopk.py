"""BatchTopK SAE (Bussmann, Leask, Nanda, arXiv 2412.06410), with AuxK.

Training keeps the k*B largest activations over the whole batch (mean L0 = k, per-token L0
varies). Inference is a JumpReLU with one global threshold theta: f = a * 1[a > theta], where
theta is an EMA (beta = `threshold_beta`) of the smallest activation kept in training batches
(arXiv 2412.06410). Until theta has been estimated (buffer < 0), inference falls back to per-token TopK.
An EMA started at step 1 remembers the first, untrained batches for ~1/(1-beta) steps, so after a
short run inference L0 is far below k: the Trainer therefore makes theta the plain mean over a late
window of training (`threshold_window_index`: the n-th batch of that window moves theta by 1/(n+1)).
Training forwards take TopK's sparse path (`sparse_topk_reconstruct`) with the batch-wide selection.
The threshold helpers below are shared with MatryoshkaSAE, which trains with BatchTopK too.
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor
from transformers import initialization as init

from ..ops import announce_path, sparse_training_enabled
from .base import SAE, register
from .sparse import SparseCode, batch_topk, threshold_code, topk_code, topk_losses, update_threshold
from .topk import TopKSAEConfig, per_token_topk, sparse_topk_reconstruct


@strict
class BatchTopKSAEConfig(TopKSAEConfig):
    """Args:
    threshold_beta: EMA decay of the inference threshold estimate.
    """

    model_type = "hubsae_batchtopk"
    threshold_beta: float = 0.999

    def validate_beta(self):
        if not 0 <= self.threshold_beta < 1:
            raise ValueError(f"threshold_beta must be in [0, 1), got {self.threshold_beta}")


def add_threshold(sae: SAE) -> None:
    """The inference threshold buffer (shape only; `init_threshold` sets it), and the index of the
    current batch in the trainer's late estimation window (None: outside it, the EMA applies)."""
    sae.register_buffer("threshold", torch.empty(()))
    sae.threshold_window_index = None


def threshold_weight(sae: SAE) -> float:
    """How far one training batch moves the threshold: 1 - beta, or 1/(n+1) for the n-th batch of
    the late window (the threshold then ends as the mean over that window)."""
    n = sae.threshold_window_index
    return 1 - sae.config.threshold_beta if n is None else 1 / (n + 1)


@torch.no_grad()
def init_threshold(sae: SAE) -> None:
    """-1: not estimated yet (the first training batch sets it)."""
    init.constant_(sae.threshold, -1.0)


def batch_topk_features(sae: SAE, pre_acts: Tensor) -> Tensor:
    """BatchTopK in training (updating the threshold); the threshold, or TopK before it exists, at inference."""
    if sae.training:
        features, kept = batch_topk(pre_acts, sae.config.k)
        update_threshold(sae.threshold, kept, threshold_weight(sae))
        return features
    if sae.threshold < 0:
        return topk_code(pre_acts, sae.config.k).to_dense(sae.config.d_sae)
    return threshold_code(pre_acts, sae.threshold)


def batch_topk_code(sae: SAE, x: Tensor) -> SparseCode:
    """`encode_sparse` of a BatchTopK-trained SAE: with the inference threshold the count varies per token
    (padded to the busiest token's); per-token TopK in training or before the threshold exists."""
    if sae.training or sae.threshold < 0:
        return per_token_topk(sae, x)
    return SparseCode.from_dense(sae.encode(x))


class BatchTopKSAE(SAE):
    config_class = BatchTopKSAEConfig

    def add_parameters(self, config: BatchTopKSAEConfig) -> None:
        add_threshold(self)

    @torch.no_grad()
    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            init_threshold(self)

    def activation(self, pre_acts: Tensor) -> Tensor:
        return batch_topk_features(self, pre_acts)

    def encode_sparse(self, x: Tensor) -> SparseCode:
        return batch_topk_code(self, x)

    def losses(self, x: Tensor, pre_acts: Tensor, features: Tensor, x_hat: Tensor, **kw) -> dict[str, Tensor]:
        return topk_losses(x, pre_acts, x_hat, kw.get("dead_mask"), self.config.resolved_k_aux, self.W_dec)

    def training_path(self) -> str:
        """ "sparse" (the batch-wide selection of `hubsae.ops.SparseTopKCode`) in training, else "dense"."""
        return "sparse" if self.training and sparse_training_enabled() else "dense"

    def reconstruct(self, x: Tensor, wants_losses: bool, target: Tensor | None = None, **loss_kwargs):
        if wants_losses and self.training_path() == "sparse":
            announce_path(type(self).__name__, True)
            dead = loss_kwargs.get("dead_mask")
            x_hat, features, losses, kept = sparse_topk_reconstruct(self, x, True, dead, target)
            update_threshold(self.threshold, kept, threshold_weight(self))
            return x_hat, features, losses
        return super().reconstruct(x, wants_losses, target, **loss_kwargs)


register(BatchTopKSAEConfig, BatchTopKSAE)
__all__ = [
    "BatchTopKSAEConfig",
    "BatchTopKSAE",
    "add_threshold",
    "init_threshold",
    "batch_topk_code",
    "batch_topk_features",
]
