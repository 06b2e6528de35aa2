"""What a trained SAE records as its base model: a Hub id the card can link, never a local path."""

import json

from hubsae.llm import SMOLLM2_NAME, hub_model_id
from hubsae.train.trainer import Trainer


def test_recipe_model_names_map_to_hub_ids(tmp_path):
    assert hub_model_id("smollm2") == SMOLLM2_NAME == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_model_id(None) == SMOLLM2_NAME
    assert hub_model_id("google/gemma-3-270m") == "google/gemma-3-270m"
    named = tmp_path / "named"
    named.mkdir()
    (named / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-3.2-1B"}))
    assert hub_model_id(str(named)) == "meta-llama/Llama-3.2-1B"
    local = tmp_path / "local"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    assert hub_model_id(str(local)) is None
    (local / "config.json").write_text("[1, 2]")
    assert hub_model_id(str(local)) is None
    assert hub_model_id(str(tmp_path / "missing" / "folder")) is None


def test_sae_trained_on_a_local_folder_records_no_local_path(tiny_config, tiny_lm):
    model, tok, model_dir, _ = tiny_lm
    saes = Trainer(tiny_config(max_tokens=64 * 4), model=model, tokenizer=tok).train()
    # the tiny model was built from a config and saved: its config.json names no Hub model
    assert not json.loads((model_dir / "config.json").read_text()).get("_name_or_path")
    assert saes["model.layers.1"].config.base_model_name_or_path is None
