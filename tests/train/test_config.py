from pathlib import Path

import pytest
from huggingface_hub.errors import StrictDataclassError

from hubsae.train import TrainConfig
from hubsae.train.config import apply_override
from hubsae.train.schedules import lr_factor, sparsity_factor

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


def test_yaml_recipe_overrides_defaults_and_overrides_apply(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: texts/\nhookpoints: [model.layers.3]\nsae: {k: 16}\nlr: 1\n")
    cfg = TrainConfig.from_yaml(recipe, ["batch_size=128", "sae.k=8", "hookpoints=[a, b]"])
    assert cfg.dataset == "texts/" and cfg.batch_size == 128 and cfg.sae == {"k": 8}
    assert cfg.hookpoints == ["a", "b"] and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.context_length == TrainConfig.context_length  # untouched default


def test_unknown_key_and_wrong_type_name_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: x\nbatch_sise: 12\n")
    with pytest.raises(ValueError, match=r"unknown key 'batch_sise' \(did you mean batch_size"):
        TrainConfig.from_yaml(recipe)
    recipe.write_text("dataset: x\nbatch_size: lots\n")
    with pytest.raises(ValueError, match=r"(?s)r.yaml: .*field 'batch_size'.*expected int, got str \(value: 'lots'\)"):
        TrainConfig.from_yaml(recipe)
    with pytest.raises(StrictDataclassError, match="progress_bar"):
        TrainConfig(dataset="x", progress_bar="yes")
    with pytest.raises(StrictDataclassError, match="hookpoints"):
        TrainConfig(dataset="x", hookpoints=[1, 2])
    with pytest.raises(ValueError, match="must look like key=value"):
        apply_override({}, "batch_size")
    recipe.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        TrainConfig.from_yaml(recipe)


def test_configs_are_strict_dataclasses_like_the_sae_configs(tmp_path):
    """One config system: huggingface_hub's @strict checks types on assignment too, and a recipe's
    whole numbers become floats where a float is meant, also inside the sae: section."""
    cfg = TrainConfig(dataset="x")
    with pytest.raises(StrictDataclassError, match="batch_size"):
        cfg.batch_size = "many"
    with pytest.raises(StrictDataclassError, match="expected float, got int"):
        TrainConfig(dataset="x", ortho_coefficient=1)  # Python callers pass floats, as to SAE configs
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "dataset: x\narchitecture: hubsae_relu\northo_coefficient: 1\nadam_betas: [0, 0]\nsae: {l1_coefficient: 5}\n"
    )
    cfg = TrainConfig.from_yaml(recipe)
    assert cfg.ortho_coefficient == 1.0 and isinstance(cfg.ortho_coefficient, float)
    assert cfg.adam_betas == [0.0, 0.0] and all(isinstance(b, float) for b in cfg.adam_betas)
    assert cfg.sae == {"l1_coefficient": 5.0} and isinstance(cfg.sae["l1_coefficient"], float)


def test_cross_field_checks():
    with pytest.raises(StrictDataclassError, match="lr_decay"):
        TrainConfig(dataset="x", lr_decay="step")
    with pytest.raises(StrictDataclassError, match="dataset"):
        TrainConfig()
    with pytest.raises(StrictDataclassError, match="max_tokens is less than one optimizer step"):
        TrainConfig(dataset="x", batch_size=100, grad_accum_steps=2, max_tokens=150)
    with pytest.raises(StrictDataclassError, match="duplicates"):
        TrainConfig(dataset="x", hookpoints=["a", "a"])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_load(recipe):
    if recipe.name.startswith("adapt-"):  # `hubsae adapt` recipes
        from hubsae.adapt import AdaptRecipe

        assert AdaptRecipe.from_yaml(recipe).steps > 0
        return
    cfg = TrainConfig.from_yaml(recipe)
    assert cfg.steps > 0


def test_lr_schedule_warmup_flat_and_decay():
    cfg = TrainConfig(dataset="x", batch_size=10, max_tokens=1000, lr_warmup_steps=10, lr_decay_start=0.5)
    assert cfg.steps == 100
    assert [lr_factor(s, cfg) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_factor(30, cfg) == 1.0 and lr_factor(50, cfg) == 1.0
    assert lr_factor(75, cfg) == pytest.approx(0.5) and lr_factor(100, cfg) == 0.0
    cos = TrainConfig(
        dataset="x", batch_size=10, max_tokens=1000, lr_decay="cosine", lr_decay_start=0.0, min_lr_ratio=0.1
    )
    assert lr_factor(0, cos) == pytest.approx(1.0) and lr_factor(50, cos) == pytest.approx(0.55)
    flat = TrainConfig(dataset="x", batch_size=10, max_tokens=1000, lr_decay="none")
    assert lr_factor(99, flat) == 1.0


def test_sparsity_warmup():
    cfg = TrainConfig(dataset="x", sparsity_warmup_steps=4)
    assert [sparsity_factor(s, cfg) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert sparsity_factor(0, TrainConfig(dataset="x")) == 1.0


def test_sae_and_pam_sections_are_checked_when_the_config_is_built():
    """Keys and types of the nested sections, against the architecture's config and PAM-SGD's arguments."""
    with pytest.raises(StrictDataclassError, match=r"sae: unknown key 'kk' \(did you mean k\?\)"):
        TrainConfig(dataset="x", sae={"kk": 3})
    with pytest.raises(StrictDataclassError, match=r"Field 'sae.k' expected int, got str \(value: 'a'\)"):
        TrainConfig(dataset="x", sae={"k": "a"})
    with pytest.raises(StrictDataclassError, match=r"sae.d_sae is set by the trainer; use the top-level d_sae"):
        TrainConfig(dataset="x", sae={"d_sae": 64})
    with pytest.raises(StrictDataclassError, match=r"sae: unknown key 'k'"):  # ReLU SAEs have no k
        TrainConfig(dataset="x", architecture="hubsae_relu", sae={"k": 4})
    with pytest.raises(StrictDataclassError, match=r"pam.ridge_grid"):
        TrainConfig(dataset="x", method="pam_sgd", pam={"ridge_grid": ["a"]})
    with pytest.raises(StrictDataclassError, match="unknown architecture 'hubsae_nope'"):
        TrainConfig(dataset="x", architecture="hubsae_nope")
    ok = TrainConfig(dataset="x", architecture="hubsae_kron", sae={"num_heads": 4, "group_sizes": [8, 8]})
    assert ok.sae == {"num_heads": 4, "group_sizes": [8, 8]}
    assert TrainConfig(dataset="x", method="pam_sgd", pam={"mu_enc": 1, "ridge_grid": [0.0, 1e-3]}).pam["mu_enc"] == 1
