"""hubsae: sparse autoencoders as Hugging Face models."""

from .auto import AutoSAE
from .eval import evaluate, pick_strength, rank_concept_features, steering_sweep, write_browser
from .hooks import Recording, SparseFeatures, ablate, clamp, record, splice, steer
from .hub import list_saes, push_to_hub
from .saes import *  # noqa: F403  (registers every architecture)
from .saes import __all__ as _saes_all
from .train import TrainConfig, Trainer

__version__ = "0.1.0"
__all__ = [
    "AutoSAE",
    "list_saes",
    "push_to_hub",
    "Recording",
    "SparseFeatures",
    "ablate",
    "clamp",
    "record",
    "splice",
    "steer",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "pick_strength",
    "rank_concept_features",
    "steering_sweep",
    "write_browser",
    *_saes_all,
]
