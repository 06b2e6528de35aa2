"""Gemma Scope (Lieberum et al. 2024) and Gemma Scope 2: JumpReLU SAEs from Google DeepMind.

Gemma Scope: `google/gemma-scope-{2b,9b,27b}-{pt,it}-{res,mlp,att,transcoders}`, one folder per SAE,
`layer_{L}/width_{W}/average_l0_{N}/params.npz` with W_enc (d_in, d_sae), W_dec (d_sae, d_in),
b_enc, b_dec, threshold. There is no config file: layer, width and L0 come from the path, the
site (res/mlp/att) and the model from the repo name (as SAELens' `get_gemma_2_config_from_hf`).

Gemma Scope 2: `google/gemma-scope-2-{size}-{pt,it}`, `{site}/layer_{L}_width_{W}_l0_{...}/` with
`params.safetensors` (w_enc, w_dec, b_enc, b_dec, threshold) and `config.json`
(model_name, width, l0, architecture "jump_relu", type "sae"/"transcoder", affine_connection,
hf_hook_point_in / hf_hook_point_out as module paths with `.output`/`.input`).

Both compute (the Gemma Scope tutorial's JumpReLUSAE):
    pre = x @ W_enc + b_enc;  f = relu(pre) * (pre > threshold);  x_hat = f @ W_dec + b_dec
i.e. no b_dec subtraction; a negative threshold becomes 0 (relu(a)*(a>t) = a*(a>max(t, 0))).
"""

import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..saes import JumpReLUSAEConfig
from ..saes.base import SAEConfig
from .base import check_shapes, read_json, read_safetensors, require, to_float32
from .files import SAEFolder
from .hookpoints import from_hf_point, from_transformer_lens

logger = logging.getLogger(__name__)

KEYS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
LAYOUT = "a Gemma Scope params file holds W_enc, W_dec, b_enc, b_dec and threshold"
_WIDTH = re.compile(r"width_\d+[km](?![a-z0-9])")
# the labels are rounded: 65k is 2**16 (SAELens' width_map)
_WIDTHS = {
    "4k": 4096,
    "16k": 16384,
    "32k": 32768,
    "65k": 65536,
    "131k": 131072,
    "262k": 262144,
    "524k": 524288,
    "1m": 1048576,
}
_REPO = re.compile(r"gemma-scope-(\d+b)-(pt|it)-(res|mlp|att|transcoders)(?:[-_/]|$)")
# site -> (TransformerLens hook read, hook written for transcoders), as SAELens' Gemma 2 loaders
_SITES = {
    "res": ("blocks.{L}.hook_resid_post", None),
    "mlp": ("blocks.{L}.hook_mlp_out", None),
    "att": ("blocks.{L}.attn.hook_z", None),
    "transcoders": ("blocks.{L}.ln2.hook_normalized", "blocks.{L}.hook_mlp_out"),
}


def _width(text: str) -> int | None:
    m = _WIDTH.search(text)
    return _WIDTHS.get(m.group(0)[len("width_") :]) if m else None


def _jumprelu_state(raw: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    state = to_float32({k: raw[k] for k in KEYS}, path)
    state["threshold"] = state["threshold"].clamp_min(0)
    return state


class GemmaScopeFormat:
    name = "Gemma Scope"
    markers = ("params.npz",)

    def read(self, folder: SAEFolder) -> tuple[SAEConfig, dict[str, Tensor]]:
        path = folder.fetch("params.npz")
        try:
            with np.load(path, allow_pickle=False) as data:  # never unpickle
                raw = {re.sub(r"^w_", "W_", k): torch.from_numpy(np.array(data[k])) for k in data.files}
        except (ValueError, OSError) as e:
            raise ValueError(f"{path} is not a readable npz archive of arrays: {e}") from e
        require(raw, KEYS, path, LAYOUT)
        state = _jumprelu_state(raw, path)
        d_in, d_sae = state["W_enc"].shape
        check_shapes(state, d_in, d_sae, path)
        hint = folder.path_hint
        if "embedding" in hint:
            raise ValueError(f"{hint}: Gemma Scope embedding SAEs are not supported (their input scale differs)")
        width = _width(hint)
        if width is not None and width != d_sae:
            raise ValueError(f"{path}: the path says width {width} but W_enc has {d_sae} latents")
        layer = re.search(r"layer_(\d+)", hint)
        repo = _REPO.search(hint)
        model = f"google/gemma-2-{repo.group(1)}" + ("-it" if repo.group(2) == "it" else "") if repo else None
        hookpoint = hookpoint_out = None
        if layer and repo:
            hook_in, hook_out = _SITES[repo.group(3)]
            hookpoint = from_transformer_lens(hook_in.format(L=layer.group(1)), model)
            if hook_out:
                hookpoint_out = from_transformer_lens(hook_out.format(L=layer.group(1)), model)
        else:
            logger.warning(
                "%s: layer or site not in the path (gemma-scope-<size>-<pt|it>-<res|mlp|att>/layer_L/...); no hookpoint set",
                hint,
            )
        config = JumpReLUSAEConfig(
            d_in=d_in, d_sae=d_sae, hookpoint=hookpoint, hookpoint_out=hookpoint_out,
            base_model_name_or_path=model, subtract_b_dec=False, normalize_decoder=False,
        )  # fmt: skip
        return config, state


class GemmaScope2Format:
    name = "Gemma Scope 2"
    markers = ("config.json", "params.safetensors")

    def read(self, folder: SAEFolder) -> tuple[SAEConfig, dict[str, Tensor]]:
        cfg_path = folder.fetch("config.json")
        cfg = read_json(cfg_path)
        if cfg.get("architecture") != "jump_relu" or cfg.get("type", "sae") not in ("sae", "transcoder"):
            raise ValueError(
                f"{cfg_path}: only Gemma Scope 2 JumpReLU SAEs and transcoders are supported, "
                f"got architecture={cfg.get('architecture')!r}, type={cfg.get('type')!r}"
            )
        if cfg.get("affine_connection"):
            raise ValueError(f"{cfg_path}: transcoders with an affine skip connection are not supported")
        path = folder.fetch("params.safetensors")
        raw = {re.sub(r"^w_", "W_", k): v for k, v in read_safetensors(path).items()}
        require(raw, KEYS, path, LAYOUT)
        if set(raw) - set(KEYS):
            raise ValueError(f"{path} holds tensors a JumpReLU SAE does not use: {sorted(set(raw) - set(KEYS))}")
        state = _jumprelu_state(raw, path)
        d_in, d_sae = state["W_enc"].shape
        check_shapes(state, d_in, d_sae, path)
        if cfg.get("width") not in (None, d_sae):
            raise ValueError(f"{cfg_path}: width {cfg['width']} but W_enc has {d_sae} latents")
        hook_in, hook_out = cfg.get("hf_hook_point_in"), cfg.get("hf_hook_point_out")
        if not hook_in:
            raise ValueError(f"{cfg_path} has no 'hf_hook_point_in'; Gemma Scope 2 configs name the module read")
        model = cfg.get("model_name")
        config = JumpReLUSAEConfig(
            d_in=d_in, d_sae=d_sae, hookpoint=from_hf_point(hook_in),
            hookpoint_out=from_hf_point(hook_out) if hook_out and hook_out != hook_in else None,
            base_model_name_or_path=model if not model or "/" in model else f"google/{model}",
            subtract_b_dec=False, normalize_decoder=False,
        )  # fmt: skip
        return config, state
