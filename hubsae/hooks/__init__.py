"""Attach SAEs to Hugging Face models: hookpoint names and interventions."""

from .features import SparseFeatures
from .hookpoints import Hookpoint, activation_width, layer_list, resolve_hookpoint, unwrap_peft
from .interventions import Recording, ablate, clamp, record, splice, steer

__all__ = [
    "Hookpoint",
    "Recording",
    "SparseFeatures",
    "ablate",
    "activation_width",
    "clamp",
    "layer_list",
    "record",
    "resolve_hookpoint",
    "splice",
    "steer",
    "unwrap_peft",
]
