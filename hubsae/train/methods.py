"""Research training methods plugged into the Trainer: OrtSAE's orthogonality penalty and PAM-SGD.

The math lives in `orthogonality.py` and `pam.py`; this file only adapts them to a run: a
deterministic partition per step (so resuming stays bit-identical) and the recipe's keys.
"""

import inspect

import torch
from torch import Tensor

from ..saes.base import SAE
from .config import TrainConfig
from .orthogonality import OrthogonalityPenalty
from .pam import PAMSGD, DecoderWindow


class OrthoTerm:
    """gamma * L_orth summed over the SAEs, with the chunk partition drawn from (seed, step)."""

    def __init__(self, config: TrainConfig):
        self.seed = config.seed
        self.penalty = OrthogonalityPenalty(
            gamma=config.ortho_coefficient,
            num_chunks=config.ortho_chunks,
            chunk_size=config.ortho_chunk_size,
            every=config.ortho_every,
        )

    def __call__(self, saes: dict[str, SAE], step: int) -> Tensor | None:
        total = None
        for i, sae in enumerate(saes.values()):
            # a fresh generator per (step, SAE): micro-batches of one step share the partition,
            # and a resumed run draws the same partitions as an uninterrupted one
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + i)
            term = self.penalty(sae.W_dec, step, generator=gen)
            if term is not None:
                total = term if total is None else total + term
        return total


def make_pam(config: TrainConfig, saes: dict[str, SAE]) -> dict[str, DecoderWindow]:
    """One PAM-SGD state per SAE; the decoder leaves autograd (it is solved, not stepped).

    `config.pam` holds PAMSGD's coefficients and DecoderWindow's schedule (`batches`,
    `validation_every`, `ridge_grid`, `prox`); TrainConfig checked its keys and types.
    """
    pam_keys = set(inspect.signature(PAMSGD).parameters) - {"sae", "n_total"}
    window_keys = set(inspect.signature(DecoderWindow).parameters) - {"pam"}
    pam_kwargs = {k: v for k, v in config.pam.items() if k in pam_keys}
    window_kwargs = {k: v for k, v in config.pam.items() if k in window_keys}
    windows = {}
    for name, sae in saes.items():
        sae.W_dec.requires_grad_(False)
        sae.b_dec.requires_grad_(False)
        windows[name] = DecoderWindow(PAMSGD(sae, n_total=config.max_tokens, **pam_kwargs), **window_kwargs)
    return windows
