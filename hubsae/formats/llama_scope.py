"""Llama Scope (He et al. 2024, OpenMOSS `lm_saes`): `hyperparams.json` + `checkpoints/final.safetensors`.

Read from lm_saes at commit b932639 (Nov 2024, `sae.py`), the library that wrote and loads them:

    weights: encoder.weight (d_sae, d_model), encoder.bias, decoder.weight (d_model, d_sae), decoder.bias
    hyperparams: d_model, d_sae, act_fn, jump_relu_threshold (one scalar), top_k, norm_activation,
        dataset_average_activation_norm {in, out}, sparsity_include_decoder_norm (default true),
        apply_decoder_bias_to_pre_encoder, use_decoder_bias, hook_point_in / hook_point_out

`SparseAutoEncoder.from_pretrained` rewrites the weights before use, and the published threshold
is in the units this produces (it was measured after it, `post_processing.py`):
  1. dataset-wise norm, s = sqrt(d_model) / average_norm: b_enc /= s_in, b_dec /= s_out,
     W_dec *= s_in / s_out, and no input scaling afterwards;
  2. sparsity_include_decoder_norm: unit decoder columns, W_enc rows and b_enc times the norms.
Then f = a * (a > threshold) with a = (x - b_dec if apply_decoder_bias_to_pre_encoder) @ W_enc.T + b_enc.
The same steps here give the same features and reconstructions as lm_saes. (SAELens' loader gives
features s_in times larger: it keeps the training-time units.)
"""

import logging
import math

import torch
from torch import Tensor

from ..saes import JumpReLUSAEConfig, ReLUSAEConfig, TopKSAEConfig
from ..saes.base import SAEConfig
from .base import check_shapes, read_json, read_safetensors, require, to_float32
from .files import SAEFolder
from .hookpoints import from_transformer_lens

logger = logging.getLogger(__name__)

WEIGHTS = "checkpoints/final.safetensors"
LAYOUT = "Llama Scope checkpoints hold encoder.weight, encoder.bias, decoder.weight (and decoder.bias)"
# Llama Scope SAEs read Llama-3.1-8B; the files do not name the model, the release does.
DEFAULT_FAMILY_MODEL = "meta-llama/Llama-3.1-8B"


class LlamaScopeFormat:
    name = "Llama Scope"
    markers = ("hyperparams.json", WEIGHTS)

    def read(self, folder: SAEFolder) -> tuple[SAEConfig, dict[str, Tensor]]:
        hp_path = folder.fetch("hyperparams.json")
        hp = read_json(hp_path)
        missing = [k for k in ("d_model", "d_sae", "act_fn", "hook_point_in") if k not in hp]
        if missing:
            raise ValueError(f"{hp_path} lacks {missing}; Llama Scope hyperparams.json files have them")
        if hp.get("use_glu_encoder"):
            raise ValueError(f"{hp_path}: GLU encoders are not supported")
        weights_path = folder.fetch(WEIGHTS)
        raw = to_float32(read_safetensors(weights_path), weights_path)
        require(raw, ("encoder.weight", "encoder.bias", "decoder.weight"), weights_path, LAYOUT)
        d_in, d_sae = int(hp["d_model"]), int(hp["d_sae"])
        use_bias = hp.get("use_decoder_bias", True)
        if use_bias:
            require(raw, ("decoder.bias",), weights_path, LAYOUT)
        w_enc, b_enc, w_dec = raw["encoder.weight"], raw["encoder.bias"], raw["decoder.weight"]  # nn.Linear layouts
        b_dec = raw["decoder.bias"] if use_bias else torch.zeros(d_in)
        norm = hp.get("norm_activation", "token-wise")  # lm_saes' default
        if norm == "dataset-wise":
            avg = hp.get("dataset_average_activation_norm") or {}
            if "in" not in avg or "out" not in avg:
                raise ValueError(f"{hp_path}: dataset-wise normalization needs dataset_average_activation_norm in/out")
            s_in, s_out = math.sqrt(d_in) / avg["in"], math.sqrt(d_in) / avg["out"]
            b_enc, b_dec, w_dec = b_enc / s_in, b_dec / s_out, w_dec * (s_in / s_out)
        elif norm not in ("inference", "none"):
            raise ValueError(f"{hp_path}: norm_activation={norm!r} rescales each token at run time; not supported")
        if hp.get("sparsity_include_decoder_norm", True):
            norms = w_dec.norm(dim=0)
            w_dec, w_enc, b_enc = w_dec / norms, w_enc * norms[:, None], b_enc * norms
        state = {"W_enc": w_enc.T, "b_enc": b_enc, "W_dec": w_dec.T, "b_dec": b_dec}
        config_cls, extra = self._activation(hp, hp_path, d_sae)
        state |= extra.pop("state", {})
        check_shapes(state, d_in, d_sae, weights_path)
        model = hp.get("model_name")
        hook_in, hook_out = hp["hook_point_in"], hp.get("hook_point_out") or hp["hook_point_in"]
        family_model = model or DEFAULT_FAMILY_MODEL
        config = config_cls(
            d_in=d_in,
            d_sae=d_sae,
            hookpoint=from_transformer_lens(hook_in, family_model),
            hookpoint_out=from_transformer_lens(hook_out, family_model) if hook_out != hook_in else None,
            base_model_name_or_path=family_model,  # the card then links the model the release names
            subtract_b_dec=bool(hp.get("apply_decoder_bias_to_pre_encoder", True) and use_bias),
            normalize_decoder=False,
            **extra,
        )
        return config, state

    @staticmethod
    def _activation(hp: dict, path, d_sae: int) -> tuple[type[SAEConfig], dict]:
        act, threshold = hp["act_fn"].lower(), hp.get("jump_relu_threshold", 0.0)
        if act == "jumprelu" or (act == "topk" and threshold > 0):  # lm_saes turns such TopK into JumpReLU
            return JumpReLUSAEConfig, {"state": {"threshold": torch.full((d_sae,), float(threshold))}}
        if act == "topk":
            return TopKSAEConfig, {"k": int(hp["top_k"])}
        if act == "relu":
            return ReLUSAEConfig, {}
        raise ValueError(f"{path}: act_fn={hp['act_fn']!r} is not supported (jumprelu, topk, relu)")
