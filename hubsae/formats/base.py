"""What every format reader shares: the `Format` protocol, strict file readers, SAE assembly."""

import logging
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..saes.base import REGISTRY, SAE, SAEConfig
from ..saes.loading import check_finite_weights, read_json_object
from .files import SAEFolder

logger = logging.getLogger(__name__)

# Never unpickled: their presence only explains why a folder cannot be loaded.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class Format(Protocol):
    """A published SAE format: detected by its marker files, read into a hubsae config + weights."""

    name: str
    markers: tuple[str, ...]  # all of them present = this format

    def read(self, folder: SAEFolder) -> tuple[SAEConfig, dict[str, Tensor]]:
        """Config and state dict in hubsae's vocabulary (W_enc (d_in, d_sae), W_dec (d_sae, d_in), ...)."""
        ...


def read_json(path: Path) -> dict:
    return read_json_object(Path(path))


def read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: the safetensors file is truncated or corrupted ({e})") from e


def require(tensors: dict, keys: tuple[str, ...], path: Path, layout: str) -> None:
    """Every key present, else a ValueError naming the file, the missing keys and the expected layout."""
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ValueError(f"{path} lacks {missing}; {layout}; it holds {sorted(tensors)}")


def check_shapes(state: dict[str, Tensor], d_in: int, d_sae: int, path: Path, d_out: int | None = None) -> None:
    """The converted tensors have hubsae's shapes (catches transposed or mislabelled files); `d_out`
    is a transcoder's output width (None: d_in)."""
    d_out = d_in if d_out is None else d_out
    want = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_out), "b_enc": (d_sae,), "b_dec": (d_out,)}
    want["W_skip"] = (d_in, d_out)
    want |= {k: (d_sae,) for k in ("threshold", "r_mag", "b_mag")}
    bad = [f"{k}: {tuple(v.shape)} (expected {want[k]})" for k, v in state.items() if tuple(v.shape) != want[k]]
    if bad:
        raise ValueError(f"{path}: tensors with the wrong shape for d_in={d_in}, d_sae={d_sae}: {', '.join(bad)}")


def sae_from_state(config: SAEConfig, state: dict[str, Tensor], where: str) -> SAE:
    """The registered class for `config`, holding exactly `state` (no tensor initialized at random)."""
    cls = REGISTRY[config.model_type][1]
    with torch.device("meta"):  # shapes only: the weights come from the file
        sae = cls(config)
    expected = set(sae.state_dict())
    if set(state) != expected:
        raise ValueError(f"{where}: converted weights {sorted(state)} do not match {cls.__name__}'s {sorted(expected)}")
    check_finite_weights(state, f"{where} (converted to {cls.__name__})")
    sae.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True, assign=True)
    return sae.eval()


def to_float32(tensors: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Converted SAEs compute in float32 (exact conversion arithmetic; bf16 is slow on CPU);
    `AutoSAE.from_pretrained(..., dtype=...)` casts afterwards. Integer or bool tensors and NaN/Inf
    values are refused, naming the tensor: a cast or a NaN would give a silently wrong SAE."""
    bad = [f"{k} ({v.dtype})" for k, v in tensors.items() if not v.is_floating_point()]
    if bad:
        raise ValueError(f"{path}: tensors that are not floating point: {', '.join(bad)}; SAE weights are floats")
    check_finite_weights(tensors, str(path))
    return {k: v.float() for k, v in tensors.items()}


def pickle_files(names: frozenset[str]) -> list[str]:
    return sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
