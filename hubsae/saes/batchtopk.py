"""BatchTopK SAE (Bussmann, Leask, Nanda 2024), with AuxK.

Training keeps the k*B largest activations over the whole batch (mean L0 = k, per-token L0
varies). Inference is a JumpReLU with one global threshold theta: f = a * 1[a > theta], where
theta is an EMA (beta = `threshold_beta`) of the smallest activation kept in training batches
(papers.md §4.3). Until theta has been estimated (buffer < 0), inference falls back to per-token TopK.
Training forwards take the sparse path of `TopKSAE.forward` with the batch-wide selection.
"""

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor
from transformers import initialization as init

from ..ops import inherits_unchanged
from .base import register
from .topk import SPARSE_MATH, TopKSAE, TopKSAEConfig


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


class BatchTopKSAE(TopKSAE):
    config_class = BatchTopKSAEConfig

    def add_parameters(self, config: BatchTopKSAEConfig) -> None:
        self.register_buffer("threshold", torch.empty(()))

    @torch.no_grad()
    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if module is self:
            init.constant_(self.threshold, -1.0)

    def batch_topk(self, pre_acts: Tensor) -> Tensor:
        """Keep the k * n_tokens largest ReLU'd activations of the whole batch."""
        flat = torch.relu(pre_acts.reshape(-1, pre_acts.shape[-1]))
        n_keep = min(self.config.k * flat.shape[0], flat.numel())
        values, indices = flat.flatten().topk(n_keep, sorted=False)
        dense = torch.zeros_like(flat).flatten().scatter_(0, indices, values)
        self._update_threshold(values)
        return dense.reshape(pre_acts.shape)

    def sparse_selection(self) -> str | None:
        """The batch-wide top k*N ("batch") in training; eval uses the threshold, so the plain path (None)."""
        names = SPARSE_MATH + ("batch_topk", "_update_threshold")
        return "batch" if self.training and inherits_unchanged(self, BatchTopKSAE, names) else None

    @torch.no_grad()
    def _update_threshold(self, kept: Tensor) -> None:
        positive = kept[kept > 0]
        if positive.numel() == 0:
            return
        batch_min = positive.min().to(self.threshold.dtype)
        if self.threshold < 0:
            self.threshold.copy_(batch_min)
        else:
            self.threshold.lerp_(batch_min, 1 - self.config.threshold_beta)

    def activation(self, pre_acts: Tensor) -> Tensor:
        if self.training:
            return self.batch_topk(pre_acts)
        if self.threshold < 0:
            return super().activation(pre_acts)
        return pre_acts * (pre_acts > self.threshold)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(indices, values) of the active latents. With the inference threshold the count varies per
        token: every token gets as many slots as the busiest one, padded with zero values."""
        if self.training or self.threshold < 0:
            return super().encode_sparse(x)
        features = self.encode(x)
        width = max(int((features != 0).sum(-1).max()), 1)
        values, indices = features.topk(width, dim=-1, sorted=False)
        return indices, values


register(BatchTopKSAEConfig, BatchTopKSAE)
__all__ = ["BatchTopKSAEConfig", "BatchTopKSAE"]
