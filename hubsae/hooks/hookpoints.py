"""Hookpoint names -> modules of a Hugging Face model.

A hookpoint is a module path as `named_modules()` prints it (`model.layers.6`,
`model.layers.6.mlp`); the suffix `:input` means the module's input instead of its output.
Paths are resolved on the model the user holds, through PEFT wrappers.
"""

from dataclasses import dataclass

from torch import nn

INPUT_SUFFIX = ":input"


@dataclass(frozen=True)
class Hookpoint:
    """A resolved hookpoint: the module and whether its input or its output is read."""

    name: str
    module: nn.Module
    site: str  # "output" or "input"


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a `PeftModel` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def resolve_hookpoint(model: nn.Module, name: str) -> Hookpoint:
    """Find the module a hookpoint names; a ValueError lists close names when it does not exist."""
    path, site = (name[: -len(INPUT_SUFFIX)], "input") if name.endswith(INPUT_SUFFIX) else (name, "output")
    base = unwrap_peft(model)
    modules = dict(base.named_modules())
    if path in modules:
        return Hookpoint(name, modules[path], site)
    parent = path.rsplit(".", 1)[0]
    near = [n for n in modules if n.startswith(parent + ".") and n.count(".") == path.count(".")][:8]
    hint = f"; modules under {parent!r}: {near}" if near else ""
    raise ValueError(f"hookpoint {name!r} is not a module of {type(base).__name__}{hint}")
