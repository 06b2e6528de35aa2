"""`hubsae adapt RECIPE.yaml` end to end on a tiny model: recipe checks, training, saved folder."""

import json

import pytest
import torch
import yaml
from huggingface_hub.errors import StrictDataclassError

from hubsae import TopKSAE, TopKSAEConfig
from hubsae.adapt import AdaptRecipe, load_adapted
from hubsae.cli import main


def test_adapt_command_trains_and_saves(tiny_lm, tmp_path):
    model, _, model_dir, corpus = tiny_lm
    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4, hookpoint="model.layers.1"))
    sae.save_pretrained(tmp_path / "sae")
    recipe = dict(
        model=str(model_dir),
        sae=str(tmp_path / "sae"),
        dataset=str(corpus),
        context_length=16,
        batch_size=4,
        steps=12,
        lr=3e-3,
        r=4,
        output_dir=str(tmp_path / "out"),
    )
    (tmp_path / "adapt.yaml").write_text(yaml.safe_dump(recipe))
    main(["adapt", str(tmp_path / "adapt.yaml"), "-o", "layers=after"])
    out = tmp_path / "out"
    history = json.loads((out / "adapt_history.json").read_text())
    assert len(history["loss"]) == 12 and history["recipe"]["layers"] == "after"
    assert history["loss"][-1] < history["loss"][0]
    peft_model, saes = load_adapted(model, out)
    assert list(saes) == ["model.layers.1"]
    assert torch.equal(saes["model.layers.1"].W_dec, sae.W_dec)
    adapted = [n for n, _ in peft_model.named_parameters() if "lora_A" in n]
    assert adapted and all(".layers.2." in n for n in adapted)


def test_adapt_recipe_errors(tmp_path):
    with pytest.raises(StrictDataclassError, match="sae must name"):
        AdaptRecipe()
    path = tmp_path / "bad.yaml"
    path.write_text("sae: x\nrank: 4\n")
    with pytest.raises(ValueError, match="unknown key 'rank'"):
        AdaptRecipe.from_yaml(path)
    path.write_text("sae: x\nsteps: many\n")
    with pytest.raises(ValueError, match=r"(?s)bad.yaml: .*field 'steps'.*expected int, got str"):
        AdaptRecipe.from_yaml(path)
