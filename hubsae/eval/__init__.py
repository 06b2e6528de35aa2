"""Evaluate SAEs and look at their features: metrics, LM loss with the SAE spliced in, the browser."""

from .examples import ActivationHistogram, TopActivations
from .metrics import (
    ReconstructionMetrics,
    decoder_max_cosine,
    density_histogram,
    fraction_recovered,
    kl_score,
    token_cross_entropy,
    token_kl,
)

__all__ = [
    "ActivationHistogram",
    "TopActivations",
    "ReconstructionMetrics",
    "decoder_max_cosine",
    "density_histogram",
    "fraction_recovered",
    "kl_score",
    "token_cross_entropy",
    "token_kl",
]
