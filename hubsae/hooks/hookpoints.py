"""Hookpoint names -> modules of a Hugging Face model.

A hookpoint is a module path as `named_modules()` prints it (`model.layers.6`,
`model.layers.6.mlp`); the suffix `:input` means the module's input instead of its output.
Paths are resolved on the model the user holds, through PEFT wrappers.

Other libraries' names are translated where the meaning is clear:

| name                        | Llama / Mistral / Qwen / Gemma 1       | Gemma 2 / 3 (post-norms)                 | GPT-2                  | GPT-NeoX                 |
|-----------------------------|----------------------------------------|------------------------------------------|------------------------|--------------------------|
| `blocks.N.hook_resid_pre`   | `model.layers.N:input`                 | `model.layers.N:input`                   | `transformer.h.N:input`| `gpt_neox.layers.N:input`|
| `blocks.N.hook_resid_mid`   | `...N.post_attention_layernorm:input`  | `...N.pre_feedforward_layernorm:input`   | `...N.ln_2:input`      | sequential residual only |
| `blocks.N.hook_resid_post`  | `model.layers.N`                       | `model.layers.N`                         | `transformer.h.N`      | `gpt_neox.layers.N`      |
| `blocks.N.hook_attn_out`    | `...N.self_attn`                       | `...N.post_attention_layernorm`          | `...N.attn`            | `...N.attention`         |
| `blocks.N.hook_mlp_out`     | `...N.mlp`                             | `...N.post_feedforward_layernorm`        | `...N.mlp`             | `...N.mlp`               |

`hidden_states[N + 1]` of `output_hidden_states=True` is the output of decoder layer N
(`hidden_states[0]` is the embedding, i.e. `blocks.0.hook_resid_pre`; the last entry has the final
norm applied, so it is not `blocks.{L-1}.hook_resid_post`).
sparsify names are relative to the backbone (`layers.6`, `layers.6.mlp`, `h.6` on GPT-2): a name
that ends a unique module path is that module; `layers.N...` also means the N-th decoder layer on
models whose layer list has another name. A name matching several modules is an error.
"""

import difflib
import re
from dataclasses import dataclass

from torch import nn

INPUT_SUFFIX = ":input"
PEFT_PREFIX = "base_model.model."
_TL_NAME = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out)$")
_LAYERS_NAME = re.compile(r"^layers\.(\d+)((?:\.[\w.]+)?)$")
_ATTENTION_NAMES = ("self_attn", "attn", "attention")


@dataclass(frozen=True)
class Hookpoint:
    """A resolved hookpoint: the module and whether its input or its output is read.

    `name` is the canonical name (the module path in the unwrapped model, plus `:input`), whatever
    convention the caller used.
    """

    name: str
    module: nn.Module
    site: str  # "output" or "input"


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a `PeftModel` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def resolve_hookpoint(model: nn.Module, name: str) -> Hookpoint:
    """Find the module a hookpoint names (module path, TransformerLens or sparsify name).

    Raises a ValueError naming the hookpoint and listing close module names when it does not
    exist, or the candidates when it is ambiguous.
    """
    base = unwrap_peft(model)
    modules = dict(base.named_modules())
    path, site = _split_site(name)
    if path.startswith(PEFT_PREFIX) and path not in modules:
        path = path[len(PEFT_PREFIX) :]  # a name copied from PeftModel.named_modules()
    tl = _TL_NAME.match(path)
    if tl:
        path, site = _translate_transformer_lens(base, modules, int(tl.group(1)), tl.group(2), name)
    elif path not in modules:
        path = _translate_relative(base, modules, path, name)
    return Hookpoint(path + (INPUT_SUFFIX if site == "input" else ""), modules[path], site)


def _split_site(name: str) -> tuple[str, str]:
    if name.endswith(INPUT_SUFFIX):
        return name[: -len(INPUT_SUFFIX)], "input"
    return name, "output"


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(path, list) of the decoder layers: the shallowest ModuleList with num_hidden_layers entries."""
    base = unwrap_peft(model)
    n_layers = _text_config_value(base, "num_hidden_layers")
    found = [
        (path, m)
        for path, m in base.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) > 0 and (n_layers is None or len(m) == n_layers)
    ]
    if not found:
        raise ValueError(f"no list of {n_layers} decoder layers found in {type(base).__name__}")
    return min(found, key=lambda item: item[0].count("."))


def hidden_size(model: nn.Module) -> int | None:
    """Width of the residual stream, from the (text) config; None when the model has no config."""
    return _text_config_value(unwrap_peft(model), "hidden_size")


def _text_config_value(model: nn.Module, key: str) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return getattr(config, key, None)


def _translate_transformer_lens(
    base: nn.Module, modules: dict[str, nn.Module], layer: int, hook: str, name: str
) -> tuple[str, str]:
    prefix, layers = layer_list(base)
    if layer >= len(layers):
        raise ValueError(
            f"hookpoint {name!r}: {type(base).__name__} has {len(layers)} decoder layers (0..{len(layers) - 1})"
        )
    block_path = f"{prefix}.{layer}"
    children = dict(layers[layer].named_children())
    post_norms = "pre_feedforward_layernorm" in children  # Gemma 2/3: norms around each sublayer's output
    attn = next((c for c in _ATTENTION_NAMES if c in children), None)
    if hook == "hook_resid_post":
        return block_path, "output"
    if hook == "hook_resid_pre":
        return block_path, "input"
    if hook == "hook_mlp_out":
        child = "post_feedforward_layernorm" if post_norms else "mlp"
        site = "output"
    elif hook == "hook_attn_out":
        child, site = ("post_attention_layernorm" if post_norms else attn), "output"
    else:  # hook_resid_mid: the input of the norm that opens the MLP half
        if getattr(getattr(base, "config", None), "use_parallel_residual", False):
            raise ValueError(f"hookpoint {name!r}: {type(base).__name__} uses a parallel residual, it has no resid_mid")
        child = next(
            (c for c in ("pre_feedforward_layernorm", "ln_2", "post_attention_layernorm") if c in children), None
        )
        site = "input"
    if child is None or child not in children:
        raise ValueError(
            f"hookpoint {name!r}: cannot translate this TransformerLens name for {type(base).__name__}; "
            f"decoder layer {block_path} has children {sorted(children)}; pass a module path instead"
        )
    return f"{block_path}.{child}", site


def _translate_relative(base: nn.Module, modules: dict[str, nn.Module], path: str, name: str) -> str:
    """A path relative to some module (sparsify's convention): unique suffix match, or `layers.N`."""
    matches = [m for m in modules if m.endswith("." + path)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"hookpoint {name!r} is ambiguous in {type(base).__name__}: it matches {matches[:8]}")
    layers_name = _LAYERS_NAME.match(path)
    if layers_name:
        try:
            prefix, _ = layer_list(base)
        except ValueError:
            prefix = None
        candidate = f"{prefix}.{layers_name.group(1)}{layers_name.group(2)}"
        if prefix is not None and candidate in modules:
            return candidate
    near = difflib.get_close_matches(path, list(modules), n=6, cutoff=0.6)
    hint = f"; close module names: {near}" if near else ""
    raise ValueError(
        f"hookpoint {name!r} is not a module of {type(base).__name__}{hint} "
        "(use a path from model.named_modules(), optionally with ':input', or a TransformerLens name "
        "such as 'blocks.6.hook_resid_post')"
    )


def activation_width(model: nn.Module, hookpoint: Hookpoint) -> int | None:
    """Last dimension of the activation at a hookpoint, known without a forward; None if unsure.

    Decoder layers, their inputs, norms and embeddings carry the residual width; a container
    (mlp, attention) writes through its last projection and reads through its first one.
    """
    module = hookpoint.module
    try:
        _, layers = layer_list(model)
    except ValueError:
        layers = []
    if any(module is layer for layer in layers):
        return hidden_size(model)
    own = _own_width(module, hookpoint.site)
    if own is not None:
        return own
    projections = [m for m in module.modules() if _projection_width(m, hookpoint.site) is not None]
    if not projections:
        return None
    chosen = projections[-1] if hookpoint.site == "output" else projections[0]
    return _projection_width(chosen, hookpoint.site)


def _projection_width(m: nn.Module, site: str) -> int | None:
    if isinstance(getattr(m, "out_features", None), int) and isinstance(getattr(m, "in_features", None), int):
        return m.out_features if site == "output" else m.in_features  # nn.Linear, PEFT's LoRA layers
    if hasattr(m, "nf") and hasattr(m, "nx"):  # transformers' GPT-2 Conv1D: weight (nx, nf)
        return m.nf if site == "output" else m.nx
    return None


def _own_width(m: nn.Module, site: str) -> int | None:
    projection = _projection_width(m, site)
    if projection is not None:
        return projection
    if isinstance(m, nn.Embedding):
        return m.embedding_dim if site == "output" else None
    weight = getattr(m, "weight", None)
    if isinstance(weight, nn.Parameter) and weight.dim() == 1 and not list(m.children()):
        return weight.shape[0]  # a norm: width in = width out
    return None


def subfolder_for(hookpoint: str) -> str:
    """Folder name for a hookpoint: the module path, with `:input` spelled `.input`."""
    return hookpoint.replace(":", ".")
