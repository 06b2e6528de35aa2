"""Every TrainConfig field has a range: a nonsense value is an error naming the field and the value,
before any model is loaded (`lr: -0.001` used to train, `d_sae: 0` to fall back to expansion_factor)."""

import dataclasses
import typing

import pytest
from huggingface_hub.errors import StrictDataclassError

from hubsae.train import TrainConfig
from hubsae.train.config import FRACTIONS, NON_NEGATIVE, POSITIVE, POSITIVE_OR_NONE

NAN, INF = float("nan"), float("inf")

BAD = {
    "lr": [-0.001, 0.0, NAN, INF],
    "d_sae": [0, -8],
    "expansion_factor": [0, -1],
    "context_length": [0, -5],
    "model_batch_size": [0],
    "buffer_contexts": [0],
    "batch_size": [0, -1],
    "grad_accum_steps": [0],
    "max_tokens": [0, -100],
    "adam_eps": [0.0, -1e-8, NAN],
    "weight_decay": [-0.1, NAN],
    "lr_warmup_steps": [-1],
    "lr_decay_start": [-0.1, 1.5, NAN],
    "min_lr_ratio": [-0.5, 2.0],
    "sparsity_warmup_steps": [-3],
    "max_grad_norm": [0.0, -1.0, INF],
    "dead_window_tokens": [0, -1],
    "norm_estimation_batches": [0],
    "ortho_coefficient": [-0.25, NAN],
    "ortho_chunks": [0],
    "ortho_chunk_size": [0],
    "ortho_every": [0],
    "seed": [-1],
    "checkpoint_every": [-10],
    "keep_checkpoints": [0, -1],
    "log_every": [-1],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in BAD.items() for v in values])
def test_out_of_range_value_names_the_field_and_the_value(name, value):
    with pytest.raises(StrictDataclassError, match=rf"TrainConfig: {name} must be .*got {value!r}"):
        TrainConfig(dataset="x", **{name: value})


def _is_number(hint) -> bool:
    """int, float, or one of them or None (lists such as adam_betas have their own check)."""
    return bool({int, float} & {hint, *typing.get_args(hint)}) and typing.get_origin(hint) is not list


def test_every_numeric_field_has_a_range_and_a_test():
    hints = typing.get_type_hints(TrainConfig)
    numeric = {f.name for f in dataclasses.fields(TrainConfig) if _is_number(hints[f.name])}
    ranged = set(POSITIVE) | set(POSITIVE_OR_NONE) | set(NON_NEGATIVE) | set(FRACTIONS)
    assert numeric == ranged
    assert set(BAD) == ranged


def test_negative_lr_in_a_recipe_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: texts/\nlr: -0.001\n")
    with pytest.raises(ValueError, match=r"lr must be positive \(or null for the default\), got -0.001"):
        TrainConfig.from_yaml(recipe)
    with pytest.raises(ValueError, match=r"d_sae must be positive .*got 0"):
        TrainConfig.from_yaml(recipe, ["lr=null", "d_sae=0"])
    with pytest.raises(ValueError, match=r"lr must be a finite number .*got nan"):
        TrainConfig.from_yaml(recipe, ["lr=.nan"])
    assert TrainConfig.from_yaml(recipe, ["lr=0.001", "d_sae=64"]).d_sae == 64


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"adam_betas": [0.9, 1.0]}, r"adam_betas must each be in \[0, 1\), got \[0.9, 1.0\]"),
        ({"adam_betas": [-0.1, 0.999]}, r"adam_betas must each be in \[0, 1\)"),
        ({"model_dtype": "float64x"}, r"model_dtype='float64x' is not one of"),
        ({"log_with": ["tensorbord"]}, r"log_with=\['tensorbord'\] may only hold"),
        ({"hookpoints": ["model.layers.1", ""]}, r"hookpoints must be module paths, got an empty one"),
        ({"output_dir": ""}, r"output_dir must not be empty"),
        ({"model": ""}, r"model must not be empty"),
        ({"context_length": 1}, r"context_length=1 leaves no text after BOS"),
    ],
)
def test_choices_and_cross_field_ranges(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        TrainConfig(dataset="x", **overrides)


def test_edge_values_that_are_fine():
    cfg = TrainConfig(
        dataset="x", context_length=1, prepend_bos=False, log_every=0, checkpoint_every=0, seed=0,
        weight_decay=0.0, lr_decay_start=1.0, min_lr_ratio=1.0, adam_betas=[0.0, 0.0], log_with=[],
    )  # fmt: skip
    assert cfg.steps == cfg.max_tokens // cfg.batch_size
