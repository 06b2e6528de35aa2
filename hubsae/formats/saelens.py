"""SAELens: `cfg.json` + `sae_weights.safetensors` (read from SAELens 6.18 `saes/*.py`, `loading/`).

SAELens stores hubsae's vocabulary already (W_enc (d_in, d_sae), W_dec (d_sae, d_in), b_enc,
b_dec, threshold; gated: b_gate, r_mag, b_mag). Its inference math, per architecture:

    sae_in = x - b_dec * apply_b_dec_to_input;  pre = sae_in @ W_enc + b_enc
    standard: relu(pre)
    topk:     pre *= ||W_dec_i|| if rescale_acts_by_decoder_norm; topk(pre) then relu
              (decode divides the features by ||W_dec_i|| again)
    jumprelu: relu(pre) * (pre > threshold)
    gated:    (sae_in @ W_enc + b_gate > 0) * relu(sae_in @ (W_enc * exp(r_mag)) + b_mag)

Conversions that keep the features equal: the decoder-norm rescaling is folded into W_enc/b_enc
and W_dec; a negative JumpReLU threshold becomes 0 (relu(a)*(a>t) = a*(a>max(t, 0))).
"""

import logging

import torch
from torch import Tensor

from ..saes import GatedSAEConfig, JumpReLUSAEConfig, ReLUSAEConfig, TopKSAEConfig
from ..saes.base import SAEConfig
from .base import check_shapes, read_json, read_safetensors, require, to_float32
from .files import SAEFolder
from .hookpoints import from_transformer_lens

logger = logging.getLogger(__name__)

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
LAYOUT = "SAELens files hold W_enc, W_dec, b_dec and b_enc (jumprelu: threshold; gated: b_gate, r_mag, b_mag)"


class SAELensFormat:
    name = "SAELens"
    markers = ("cfg.json", "sae_weights.safetensors")

    def read(self, folder: SAEFolder) -> tuple[SAEConfig, dict[str, Tensor]]:
        cfg_path = folder.fetch("cfg.json")
        cfg = _normalized_config(read_json(cfg_path), cfg_path)
        arch = cfg["architecture"]
        weights_path = folder.fetch("sae_weights.safetensors")
        raw = to_float32(read_safetensors(weights_path), weights_path)
        if "log_threshold" in raw and "threshold" not in raw:  # a training checkpoint
            raw["threshold"] = raw.pop("log_threshold").exp()
        _drop_unit_scaling_factor(raw, weights_path)
        needed = {"gated": ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"), "jumprelu": ("threshold",)}
        require(raw, ("W_enc", "W_dec", "b_dec", *needed.get(arch, ("b_enc",))), weights_path, LAYOUT)
        state = {k: raw[k] for k in ("W_enc", "W_dec", "b_dec")}
        common = _common_fields(cfg, folder)
        if arch == "gated":
            state |= {"b_enc": raw["b_gate"], "r_mag": raw["r_mag"], "b_mag": raw["b_mag"]}
            config: SAEConfig = GatedSAEConfig(**common)
        else:
            state["b_enc"] = raw["b_enc"]
        if arch == "standard":
            config = ReLUSAEConfig(**common)
        elif arch == "topk":
            if cfg.get("rescale_acts_by_decoder_norm"):
                _fold_decoder_norm(state)
            config = TopKSAEConfig(k=int(cfg["k"]), **common)
        elif arch == "jumprelu":
            state["threshold"] = raw["threshold"].clamp_min(0)
            config = JumpReLUSAEConfig(**common)
        extra = sorted(set(raw) - set(state) - {"b_gate", "log_threshold"})
        if extra:
            raise ValueError(f"{weights_path} holds tensors a SAELens {arch} SAE does not use: {extra}")
        check_shapes(state, config.d_in, config.d_sae, weights_path)
        return config, state


def _normalized_config(cfg: dict, path) -> dict:
    """SAELens 6 layout (hook in `metadata`); configs written before 6.0 are renamed as SAELens does."""
    meta = cfg.get("metadata") or {}
    cfg = {**cfg, **{k: v for k, v in meta.items() if k not in cfg}}
    renames = {
        "hook_point": "hook_name",
        "hook_point_head_index": "hook_head_index",
        "activation_fn_str": "activation_fn",
    }
    cfg = {renames.get(k, k): v for k, v in cfg.items()}
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if "architecture" not in cfg:
        cfg["architecture"] = "topk" if cfg.get("activation_fn") == "topk" and "k" in kwargs else "standard"
        cfg.setdefault("k", kwargs.get("k"))
    arch = cfg["architecture"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: SAELens architecture {arch!r} is not supported; supported: {ARCHITECTURES}")
    for key in ("d_in", "d_sae") + (("k",) if arch == "topk" else ()):
        if cfg.get(key) is None:
            raise ValueError(f"{path} has no {key!r}; a SAELens {arch} config needs it")
    if cfg.get("hook_head_index") is not None:
        raise ValueError(f"{path}: SAEs of a single attention head (hook_head_index) are not supported")
    norm = cfg.get("normalize_activations")
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(f"{path}: normalize_activations={norm!r} has no hubsae equivalent (per-token rescaling)")
    if norm in ("expected_average_only_in", True):
        # SAELens folds a factor from its own registry here; without it (any repo outside the
        # registry) it runs the SAE unscaled, and so does hubsae.
        logger.warning(
            "%s: normalize_activations=%r; no scaling factor is in the files, inputs are not rescaled", path, norm
        )
    return cfg


def _common_fields(cfg: dict, folder: SAEFolder) -> dict:
    hook = cfg.get("hook_name")
    model = cfg.get("model_name")
    return {
        "d_in": int(cfg["d_in"]),
        "d_sae": int(cfg["d_sae"]),
        "hookpoint": from_transformer_lens(hook, model) if hook else None,
        "base_model_name_or_path": model,
        "subtract_b_dec": bool(cfg.get("apply_b_dec_to_input", True)),
        "normalize_decoder": False,  # keep the published decoder as it is
    }


def _drop_unit_scaling_factor(raw: dict[str, Tensor], path) -> None:
    scale = raw.pop("scaling_factor", None)
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        raise ValueError(f"{path}: a fine-tuning scaling_factor other than 1 is not supported")


def _fold_decoder_norm(state: dict[str, Tensor]) -> None:
    """topk(pre * n) with decode(f / n) == topk(pre') with W_enc' = W_enc * n, W_dec' = W_dec / n."""
    norms = state["W_dec"].norm(dim=-1)
    state["W_enc"] = state["W_enc"] * norms
    state["b_enc"] = state["b_enc"] * norms
    state["W_dec"] = state["W_dec"] / norms[:, None]
