"""Readers for published SAE formats: one module per format, detected from a folder's files.

| format        | marker files                                  | module         |
|---------------|-----------------------------------------------|----------------|
| hubsae        | config.json + model.safetensors               | (native)       |
| SAELens       | cfg.json + sae_weights.safetensors            | saelens.py     |
| sparsify      | cfg.json + sae.safetensors                    | sparsify.py    |
| Gemma Scope   | params.npz                                    | gemma_scope.py |
| Gemma Scope 2 | config.json + params.safetensors              | gemma_scope.py |
| Llama Scope   | hyperparams.json + checkpoints/final.safetensors | llama_scope.py |

Each reader returns a hubsae config and a state dict with the same math as the original library;
`AutoSAE.from_pretrained` uses them when a folder is not a hubsae folder.
"""

import logging

from ..saes.base import SAE
from .base import Format, pickle_files, read_json, sae_from_state
from .files import SAEFolder, open_folder
from .gemma_scope import GemmaScope2Format, GemmaScopeFormat
from .llama_scope import LlamaScopeFormat
from .saelens import SAELensFormat
from .sparsify import SparsifyFormat

logger = logging.getLogger(__name__)

NATIVE = "hubsae"
NATIVE_MARKERS = (("config.json", "model.safetensors"), ("config.json", "model.safetensors.index.json"))


class UnknownFormatError(ValueError):
    """A folder whose files match no SAE format (as opposed to a folder with a problem)."""


FORMATS: list[Format] = [SAELensFormat(), SparsifyFormat(), GemmaScopeFormat(), GemmaScope2Format(), LlamaScopeFormat()]


def detect(folder: SAEFolder) -> Format | str:
    """The folder's format (`NATIVE` for a hubsae folder); a clear error for none, two, or pickles."""
    names = folder.names
    found: dict[str, tuple[str, ...]] = {}
    native = next((m for m in NATIVE_MARKERS if set(m) <= names), None)
    if native:
        found[NATIVE] = native
    for fmt in FORMATS:
        if set(fmt.markers) <= names:
            found[fmt.name] = fmt.markers
    if len(found) > 1:
        which = "; ".join(f"{name} ({', '.join(markers)})" for name, markers in found.items())
        raise ValueError(f"{folder.where} holds the files of {len(found)} SAE formats: {which}; keep one per folder")
    if found:
        name = next(iter(found))
        return NATIVE if name == NATIVE else next(f for f in FORMATS if f.name == name)
    pickles = pickle_files(names)
    if pickles:
        raise ValueError(
            f"{folder.where} holds only pickle checkpoints {pickles}; hubsae never unpickles files "
            "(loading a pickle can run arbitrary code): convert them to safetensors first"
        )
    if "hubsae_index.json" in names:  # the root of a repo pushed by hubsae.push_to_hub
        subfolders = sorted(read_json(folder.fetch("hubsae_index.json")).get("saes", {}))
        raise UnknownFormatError(f"{folder.where} holds several SAEs; pass subfolder= one of {subfolders}")
    known = "; ".join([" + ".join(NATIVE_MARKERS[0])] + [" + ".join(f.markers) for f in FORMATS])
    raise UnknownFormatError(
        f"{folder.where} is not an SAE folder of a known format; it holds {sorted(names)}; expected {known}"
    )


def load_converted(fmt: Format, folder: SAEFolder) -> SAE:
    """Read a published SAE into the hubsae class with the same math."""
    config, state = fmt.read(folder)
    sae = sae_from_state(config, state, folder.where)
    logger.info(
        "loaded %s SAE from %s as %s (hookpoint %r)", fmt.name, folder.where, type(sae).__name__, config.hookpoint
    )
    return sae


__all__ = ["FORMATS", "NATIVE", "Format", "SAEFolder", "UnknownFormatError", "detect", "load_converted", "open_folder"]
