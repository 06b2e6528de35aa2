"""The two TransformerLens -> HF hookpoint translations agree.

`formats.hookpoints` translates from the model's name alone (reading a published config before any
model is loaded); `hooks.hookpoints` translates from the loaded model's modules. A published SAE is
only hooked where it was trained if both give the same module path.
"""

import pytest
from tiny_models import tiny_gemma, tiny_gpt2, tiny_llama

from hubsae.formats.hookpoints import from_transformer_lens
from hubsae.hooks.hookpoints import resolve_hookpoint

HOOKS = ["hook_resid_pre", "hook_resid_post", "hook_resid_mid", "hook_mlp_out", "hook_attn_out"]
MODELS = {"meta-llama/Llama-3.2-1B": tiny_llama, "openai-community/gpt2": tiny_gpt2, "google/gemma-3-270m": tiny_gemma}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("hook", HOOKS)
def test_name_table_and_module_translation_agree(model_name, hook):
    model = MODELS[model_name]()
    tl_name = f"blocks.1.{hook}"
    from_table = from_transformer_lens(tl_name, model_name)
    from_model = resolve_hookpoint(model, tl_name).name
    assert from_table == from_model, f"{tl_name} on {model_name}: table {from_table!r}, model {from_model!r}"
    assert resolve_hookpoint(model, from_table).name == from_model  # the table's answer exists in the model
