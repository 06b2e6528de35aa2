"""Other libraries' hookpoint names -> Hugging Face module paths, without the model at hand.

TransformerLens names (`blocks.12.hook_resid_post`) and sparsify's backbone-relative names
(`layers.12`) do not say which module they mean until the architecture is known, so the
translation needs the model family; it is read from the model name the format records. When the
family is unknown the name is kept as it is (`hubsae.hooks.resolve_hookpoint` translates
TransformerLens and backbone-relative names once a model is given) and a warning says so.

| TransformerLens          | Llama-like (Llama, Mistral, Qwen, SmolLM2, Gemma 1) | Gemma 2 / 3         | GPT-2          | GPT-NeoX (Pythia) |
|--------------------------|------------------------------|-----------------------------|----------------|-------------------|
| blocks.N.hook_resid_pre  | model.layers.N:input         | model.layers.N:input        | transformer.h.N:input | gpt_neox.layers.N:input |
| blocks.N.hook_resid_post | model.layers.N               | model.layers.N              | transformer.h.N | gpt_neox.layers.N |
| blocks.N.hook_resid_mid  | ...N.post_attention_layernorm:input | ...N.pre_feedforward_layernorm:input | ...N.ln_2:input | (parallel residual) |
| blocks.N.hook_attn_out   | ...N.self_attn               | ...N.post_attention_layernorm | ...N.attn    | ...N.attention    |
| blocks.N.hook_mlp_out    | ...N.mlp                     | ...N.post_feedforward_layernorm | ...N.mlp   | ...N.mlp          |
| blocks.N.attn.hook_z     | ...N.self_attn.o_proj:input  | ...N.self_attn.o_proj:input | ...N.attn.c_proj:input | ...N.attention.dense:input |
| blocks.N.ln2.hook_normalized | ...N.post_attention_layernorm | ...N.pre_feedforward_layernorm | ...N.ln_2 | ...N.post_attention_layernorm |
| hook_embed               | model.embed_tokens           | (kept: Gemma scales embeddings) | transformer.wte | gpt_neox.embed_in |
"""

import logging
import re

logger = logging.getLogger(__name__)

_FAMILIES: dict[str, dict[str, str | None]] = {
    "llama": {
        "base": "model",
        "layers": "model.layers",
        "hook_resid_mid": "post_attention_layernorm:input",
        "hook_attn_out": "self_attn",
        "hook_mlp_out": "mlp",
        "attn.hook_z": "self_attn.o_proj:input",
        "ln2.hook_normalized": "post_attention_layernorm",
        "hook_embed": "model.embed_tokens",
    },
    "gemma2": {
        "base": "model",
        "layers": "model.layers",
        "hook_resid_mid": "pre_feedforward_layernorm:input",
        "hook_attn_out": "post_attention_layernorm",
        "hook_mlp_out": "post_feedforward_layernorm",
        "attn.hook_z": "self_attn.o_proj:input",
        "ln2.hook_normalized": "pre_feedforward_layernorm",
        "hook_embed": None,
    },
    "gpt2": {
        "base": "transformer",
        "layers": "transformer.h",
        "hook_resid_mid": "ln_2:input",
        "hook_attn_out": "attn",
        "hook_mlp_out": "mlp",
        "attn.hook_z": "attn.c_proj:input",
        "ln2.hook_normalized": "ln_2",
        "hook_embed": "transformer.wte",
    },
    "gpt_neox": {
        "base": "gpt_neox",
        "layers": "gpt_neox.layers",
        "hook_resid_mid": None,
        "hook_attn_out": "attention",
        "hook_mlp_out": "mlp",
        "attn.hook_z": "attention.dense:input",
        "ln2.hook_normalized": "post_attention_layernorm",
        "hook_embed": "gpt_neox.embed_in",
    },
}
_TL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def model_family(model_name: str | None) -> str | None:
    """The module-naming family of a model from its name, or None when the name does not tell."""
    name = (model_name or "").lower().replace("_", "-")
    if re.search(r"gemma-?[23]", name):
        return "gemma2"
    if "gpt2" in name or "gpt-2" in name:
        return "gpt2"
    if "pythia" in name or "neox" in name:
        return "gpt_neox"
    if any(k in name for k in ("llama", "mistral", "qwen", "smollm", "gemma")):
        return "llama"
    return None


def from_transformer_lens(name: str, model_name: str | None) -> str:
    """HF module path for a TransformerLens hook name; the name itself when it cannot be translated."""
    family = _FAMILIES.get(model_family(model_name) or "")
    m = _TL_BLOCK.match(name)
    path = None
    if family is not None and m:
        layer, hook = m.group(1), m.group(2)
        block = f"{family['layers']}.{layer}"
        if hook == "hook_resid_post":
            path = block
        elif hook == "hook_resid_pre":
            path = f"{block}:input"
        elif family.get(hook):
            path = f"{block}.{family[hook]}"
    elif family is not None and family.get(name):
        path = family[name]
    if path is None:
        logger.warning(
            "hookpoint %r (model %r) is kept as it is: no module path is known for it; "
            "hubsae.hooks translates TransformerLens names once the model is given",
            name,
            model_name,
        )
        return name
    return path


def from_backbone_relative(name: str, model_name: str | None) -> str:
    """sparsify names modules relative to the backbone (`layers.6.mlp`); prefix the backbone's path."""
    family = _FAMILIES.get(model_family(model_name) or "")
    if family is None:
        logger.warning(
            "hookpoint %r (model %r) is kept relative to the backbone: the model family is unknown", name, model_name
        )
        return name
    return f"{family['base']}.{name}"


def from_hf_point(name: str) -> str:
    """Gemma Scope 2's `model.layers.17.output` / `...o_proj.input` -> `model.layers.17` / `...o_proj:input`."""
    if name.endswith(".output"):
        return name[: -len(".output")]
    if name.endswith(".input"):
        return name[: -len(".input")] + ":input"
    return name
