"""hubsae: sparse autoencoders as Hugging Face models."""

from .auto import AutoSAE
from .hooks import Recording, SparseFeatures, ablate, clamp, record, splice, steer
from .saes import *  # noqa: F403  (registers every architecture)
from .saes import __all__ as _saes_all

__version__ = "0.1.0"
__all__ = [
    "AutoSAE",
    "Recording",
    "SparseFeatures",
    "ablate",
    "clamp",
    "record",
    "splice",
    "steer",
    *_saes_all,
]
