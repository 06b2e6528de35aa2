"""Steering vectors for other runtimes: a llama.cpp control-vector GGUF and plain safetensors.

A spec entry adds sum_i c_i u_i (u_i: decoder row i at unit norm) to one activation; the vector
per hookpoint is the sum over the entries there. llama.cpp's control vectors follow its loader
(`common_control_vector_load_one` in common/common.cpp) and applier (`llama_adapter_cvec` in
src/llama-adapter.cpp):
- `general.architecture = "controlvector"`, `controlvector.model_hint` (the model type, e.g.
  "llama"; llama.cpp does not check it), `controlvector.layer_count` (the number of tensors);
- one F32 1-D tensor `direction.N` per layer. The loader puts `direction.N` at buffer offset
  n_embd * (N - 1) and block `il` reads offset n_embd * (il - 1), so `direction.N` is added to the
  output of block N (0-based, after its FFN residual add), i.e. to `model.layers.N`'s output here;
  N = 0 is rejected by the loader, so block 0's output cannot be steered.
llama.cpp adds the vector at every token, with a fixed size: a relative entry (c_i times each
token's norm) needs `norms={hookpoint: typical ||x||}` to become absolute, and entries limited to
"prompt" or "generated" positions are exported with a warning.
"""

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..files import atomic_write
from ..hooks.features import unit_directions
from ..saes.base import SAE
from .model import load_spec_saes, read_spec
from .spec import SteeringSpec

logger = logging.getLogger(__name__)

GGUF_ARCH = "controlvector"
VECTORS_FORMAT = "hubsae-steering-vectors/1"
# the residual stream after block N: HF module paths (Llama-style, GPT-2, NeoX) and TransformerLens names
_BLOCK_OUTPUT = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)$|^blocks\.(\d+)\.hook_resid_post$")
_BLOCK_INPUT = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+):input$|^blocks\.(\d+)\.hook_resid_pre$")


def steering_vectors(
    spec: SteeringSpec, saes: Sequence[SAE], norms: Mapping[str, float] | None = None
) -> dict[str, Tensor]:
    """`{hookpoint: vector}` (float32, (d_in,)): what the spec adds at each hookpoint, summed over entries."""
    norms = dict(norms or {})
    vectors: dict[str, Tensor] = {}
    for i, (entry, sae) in enumerate(zip(spec.entries, saes, strict=True)):
        hookpoint = entry.hookpoint or sae.config.hookpoint
        if hookpoint is None:
            raise ValueError(f"entries[{i}]: neither the entry nor its SAE names a hookpoint")
        scale = 1.0
        if entry.relative:
            if hookpoint not in norms:
                raise ValueError(
                    f"entries[{i}] is relative (coefficients are fractions of each token's norm ||x|| at "
                    f"{hookpoint!r}), which no fixed vector expresses; pass norms={{{hookpoint!r}: typical ||x||}} "
                    "to export c * norm, or save the spec with absolute coefficients"
                )
            scale = float(norms[hookpoint])
            if not math.isfinite(scale) or scale <= 0:
                raise ValueError(f"norms[{hookpoint!r}] must be a positive finite number, got {norms[hookpoint]!r}")
        if entry.positions != "all":
            logger.warning(
                "entries[%d] steers positions=%r; the exported vector is added at every position", i, entry.positions
            )
        with torch.no_grad():
            ids = torch.tensor(entry.features, dtype=torch.long, device=sae.W_dec.device)
            if int(ids.max()) >= sae.config.d_sae:
                raise ValueError(f"entries[{i}]: features {list(entry.features)} exceed d_sae={sae.config.d_sae}")
            coefs = torch.tensor(entry.coefficients, dtype=torch.float64)
            vector = (coefs * scale) @ unit_directions(sae, ids).to(torch.float64).cpu()
        vectors[hookpoint] = vectors.get(hookpoint, 0) + vector
    return {hp: v.to(torch.float32) for hp, v in vectors.items()}


def control_vector_layer(hookpoint: str) -> int:
    """llama.cpp's layer index N (`direction.N`) for a residual-stream hookpoint; ValueError otherwise."""
    out, inp = _BLOCK_OUTPUT.search(hookpoint), _BLOCK_INPUT.search(hookpoint)
    if out:
        layer = int(out.group(1) or out.group(2))
    elif inp:
        layer = int(inp.group(1) or inp.group(2)) - 1  # the input of block N is the output of block N - 1
    else:
        raise ValueError(
            f"hookpoint {hookpoint!r} is not a block's residual output (e.g. 'model.layers.6'): llama.cpp adds "
            "control vectors only there"
        )
    if layer < 1:
        raise ValueError(
            f"hookpoint {hookpoint!r} is the residual stream after block {layer}: llama.cpp's control vectors "
            "start at block 1 (direction.0 is rejected by its loader)"
        )
    return layer


def _spec_and_saes(spec, saes: Sequence[SAE] | None, **load_kwargs) -> tuple[SteeringSpec, list[SAE]]:
    origin = None
    if not isinstance(spec, SteeringSpec):
        spec, origin = read_spec(spec, **load_kwargs)
    return spec, list(saes) if saes is not None else load_spec_saes(spec, origin)


def export_gguf(
    spec: "SteeringSpec | str | os.PathLike",
    saes: Sequence[SAE] | None,
    path: str | os.PathLike,
    *,
    model_hint: str,
    norms: Mapping[str, float] | None = None,
    n_layers: int | None = None,
) -> Path:
    """Write the spec's vectors as a llama.cpp control vector (`llama-cli --control-vector PATH`).

    `spec` is a SteeringSpec or a spec file, folder or repo (its SAEs loaded when `saes` is None);
    `model_hint` is the base model's type (`model.config.model_type`); with `n_layers`, layers that
    llama.cpp does not steer (the last is block n_layers - 1) are refused.
    """
    import gguf

    spec, saes = _spec_and_saes(spec, saes)
    by_layer: dict[int, Tensor] = {}
    for hookpoint, vector in steering_vectors(spec, saes, norms).items():
        layer = control_vector_layer(hookpoint)
        if n_layers is not None and layer >= n_layers:
            raise ValueError(f"hookpoint {hookpoint!r} is block {layer}, but the model has {n_layers} blocks")
        if layer in by_layer:
            raise ValueError(f"two hookpoints map to llama.cpp layer {layer} (one is {hookpoint!r})")
        by_layer[layer] = vector

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, arch=GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(by_layer))
        for layer in sorted(by_layer):
            writer.add_tensor(f"direction.{layer}", by_layer[layer].numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return atomic_write(path, write)


def export_safetensors(
    spec: "SteeringSpec | str | os.PathLike",
    saes: Sequence[SAE] | None,
    path: str | os.PathLike,
    *,
    norms: Mapping[str, float] | None = None,
) -> Path:
    """Write `{hookpoint: vector}` (float32) as safetensors; the metadata carries the spec's JSON."""
    from safetensors.torch import save_file

    spec, saes = _spec_and_saes(spec, saes)
    vectors = {hp: v.contiguous() for hp, v in steering_vectors(spec, saes, norms).items()}
    metadata = {"format": VECTORS_FORMAT, "spec": spec.to_json()}
    return atomic_write(path, lambda tmp: save_file(vectors, tmp, metadata=metadata))
