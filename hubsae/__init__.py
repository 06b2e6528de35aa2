"""hubsae: sparse autoencoders as Hugging Face models.

`import hubsae` is cheap: it loads nothing but this file. Each public name below imports its module
on first use (PEP 562), so a script that only steers never imports accelerate, peft or matplotlib.
The architectures register with transformers' AutoConfig / AutoModel when `hubsae.saes` is imported,
which touching any SAE name (`hubsae.AutoSAE`, `hubsae.TopKSAE`, ...) does.
"""

import importlib

__version__ = "0.1.0"

_ARCHITECTURES = [
    "SAE",
    "SAEConfig",
    "SAEOutput",
    "REGISTRY",
    "register",
    *(
        f"{name}SAE{suffix}"
        for name in ("BatchTopK", "Gated", "JumpReLU", "Kron", "Matryoshka", "ReLU", "Switch", "TopK")
        for suffix in ("", "Config")
    ),
]
# public name -> module that defines it
_LAZY = {
    "AutoSAE": "hubsae.auto",
    "attribute": "hubsae.eval",
    "evaluate": "hubsae.eval",
    "pick_strength": "hubsae.eval",
    "rank_concept_features": "hubsae.eval",
    "run_suite": "hubsae.eval",
    "steering_sweep": "hubsae.eval",
    "write_browser": "hubsae.eval",
    "Recording": "hubsae.hooks",
    "SparseFeatures": "hubsae.hooks",
    "ablate": "hubsae.hooks",
    "clamp": "hubsae.hooks",
    "record": "hubsae.hooks",
    "splice": "hubsae.hooks",
    "steer": "hubsae.hooks",
    "list_saes": "hubsae.hub",
    "push_to_hub": "hubsae.hub",
    "SAERef": "hubsae.steered",
    "SteeringEntry": "hubsae.steered",
    "SteeringSpec": "hubsae.steered",
    "load_steered": "hubsae.steered",
    "push_steered": "hubsae.steered",
    "export_gguf": "hubsae.steered",
    "export_safetensors": "hubsae.steered",
    "TrainConfig": "hubsae.train",
    "Trainer": "hubsae.train",
    **dict.fromkeys(_ARCHITECTURES, "hubsae.saes"),
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hubsae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
