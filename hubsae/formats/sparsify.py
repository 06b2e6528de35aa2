"""EleutherAI sparsify: `<hookpoint>/cfg.json` + `<hookpoint>/sae.safetensors` (read at commit 9d3b136,
`sparse_coder.py`, `fused_encoder.py`, `config.py`).

    cfg.json: d_in, activation ("topk"), k, num_latents (0 = d_in * expansion_factor), transcode, ...
    weights:  encoder.weight (d_sae, d_in) (an nn.Linear), encoder.bias, W_dec (d_sae, d_in), b_dec,
              and W_skip (d_in, d_in) as an nn.Linear weight (out, in) with `skip_connection`
    encode:   pre = relu((x - b_dec) @ encoder.weight.T + encoder.bias), top-k   (no b_dec for transcoders)
    decode:   sae_out = top_acts @ W_dec[top_indices] + b_dec (+ x @ W_skip.T with skip_connection, on the raw x)

The folder is named after the module path relative to the backbone (`layers.10`); the training
config one level up (`config.json`, key `model`) names the model, from which the full path is made.
"""

import logging

from torch import Tensor

from ..saes import TopKSAEConfig
from ..saes.base import SAEConfig
from .base import check_shapes, read_json, read_safetensors, require, to_float32
from .files import SAEFolder
from .hookpoints import from_backbone_relative

logger = logging.getLogger(__name__)

LAYOUT = "sparsify files hold encoder.weight, encoder.bias, W_dec and b_dec"


class SparsifyFormat:
    name = "sparsify"
    markers = ("cfg.json", "sae.safetensors")

    def read(self, folder: SAEFolder) -> tuple[SAEConfig, dict[str, Tensor]]:
        cfg_path = folder.fetch("cfg.json")
        cfg = read_json(cfg_path)
        if "d_in" not in cfg or "k" not in cfg:
            raise ValueError(f"{cfg_path} has no 'd_in' or 'k'; a sparsify cfg.json needs both")
        if cfg.get("activation", "topk") != "topk":
            raise ValueError(f"{cfg_path}: sparsify activation {cfg['activation']!r} is not supported (only 'topk')")
        if cfg.get("signed"):
            raise ValueError(f"{cfg_path}: sparsify signed latents are not supported")
        skip = bool(cfg.get("skip_connection"))
        d_in = int(cfg["d_in"])
        d_sae = int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 0)))
        weights_path = folder.fetch("sae.safetensors")
        raw = to_float32(read_safetensors(weights_path), weights_path)
        require(raw, ("encoder.weight", "encoder.bias", "W_dec", "b_dec") + (("W_skip",) if skip else ()),
                weights_path, LAYOUT)  # fmt: skip
        if "W_skip" in raw and not skip:
            raise ValueError(f"{weights_path} holds W_skip but {cfg_path} has skip_connection false")
        state = {
            "W_enc": raw["encoder.weight"].T,
            "b_enc": raw["encoder.bias"],
            "W_dec": raw["W_dec"],
            "b_dec": raw["b_dec"],
        }
        if skip:
            state["W_skip"] = raw["W_skip"].T  # sparsify adds x @ W_skip.mT; hubsae's W_skip is (d_in, d_out)
        check_shapes(state, d_in, d_sae, weights_path)
        model, hookpoint = self._hookpoint(folder)
        transcode = bool(cfg.get("transcode"))
        config = TopKSAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            k=int(cfg["k"]),
            # a transcoder reads the module's input and predicts its output
            hookpoint=f"{hookpoint}:input" if transcode and hookpoint else hookpoint,
            hookpoint_out=hookpoint if transcode else None,
            base_model_name_or_path=model,
            subtract_b_dec=not transcode,
            normalize_decoder=bool(cfg.get("normalize_decoder", True)),
            skip_connection=skip,
        )
        return config, state

    @staticmethod
    def _hookpoint(folder: SAEFolder) -> tuple[str | None, str | None]:
        name = (folder.subfolder or "").strip("/").split("/")[-1] or (
            folder.local_root.name if folder.local_root is not None else ""
        )
        run_cfg = folder.fetch_parent("config.json")
        model = read_json(run_cfg).get("model") if run_cfg is not None else None
        if not name:
            return model, None
        return model, from_backbone_relative(name, model)
