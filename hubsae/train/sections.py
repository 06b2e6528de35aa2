"""What the nested sections of a recipe may hold: `sae:` (the architecture's config fields) and
`pam:` (PAM-SGD's coefficients and window schedule), with each field's type, so a TrainConfig
names a bad key or value when it is built, before any model is loaded or text is read."""

import inspect
from typing import Any

from ..saes.base import REGISTRY, SAEConfig
from .pam import PAMSGD, DecoderWindow

# SAE config fields the trainer fills in, and the recipe key that sets each instead
TRAINER_SET = {
    "d_in": "it is the hookpoint's width",
    "d_sae": "use the top-level d_sae or expansion_factor",
    "hookpoint": "use the top-level hookpoints",
    "base_model_name_or_path": "use the top-level model",
    "input_norm": "use the top-level normalize_activations",
    "input_scale": "it is estimated from the data (normalize_activations)",
    "hookpoint_out": "use the top-level hookpoints_out",
    "d_out": "it is the width of the hookpoints_out activation",
    "output_scale": "it is estimated from the data (normalize_activations)",
}


def sae_fields(architecture: str) -> dict[str, Any]:
    """Fields (name -> annotation) declared by the architecture's config and its SAEConfig bases."""
    if architecture not in REGISTRY:
        raise ValueError(f"unknown architecture {architecture!r}; registered: {sorted(REGISTRY)}")
    fields: dict[str, Any] = {}
    for klass in reversed(REGISTRY[architecture][0].__mro__):
        if issubclass(klass, SAEConfig):  # their annotations are real types (no postponed evaluation)
            fields.update(klass.__dict__.get("__annotations__", {}))
    fields.pop("model_type", None)
    return fields


def pam_fields() -> dict[str, Any]:
    """Keyword arguments of `PAMSGD` (coefficients) and `DecoderWindow` (schedule), with annotations."""
    fields = {}
    for target, skip in ((PAMSGD, {"sae", "n_total"}), (DecoderWindow, {"pam"})):
        for name, param in inspect.signature(target).parameters.items():
            if name not in skip:
                fields[name] = param.annotation
    return fields
