"""Strict loading of hubsae folders: a config field the file lacks, a config that is not a JSON
object, integer or non-finite weights, pickles, and inputs of the wrong dtype are errors naming the
file, the field or the tensor; never a default, a cast or a NaN."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_contract import ARCHS, make_config

import hubsae
from hubsae.saes import REGISTRY
from hubsae.saes.loading import config_fields


def _saved(model_type: str, folder, **overrides):
    sae = hubsae.AutoSAE.from_config(make_config(model_type, **overrides)).eval()
    sae.save_pretrained(folder)
    return sae


def _edit_config(folder, edit) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _required(model_type: str) -> list[str]:
    config_cls = REGISTRY[model_type][0]
    return [f for f in config_fields(config_cls) if f not in config_cls.defaults_safe_when_missing]


@pytest.mark.parametrize("model_type", ARCHS)
def test_every_field_that_changes_the_math_is_required(model_type, tmp_path):
    _saved(model_type, tmp_path)
    full = json.loads((tmp_path / "config.json").read_text())
    required = _required(model_type)
    assert {"d_in", "d_sae", "input_norm", "input_scale", "subtract_b_dec"} <= set(required)
    for field in required:
        _edit_config(tmp_path, lambda cfg, field=field: {k: v for k, v in full.items() if k != field})
        with pytest.raises(ValueError, match=rf"config.json lacks the field\(s\) \['{field}'\]"):
            hubsae.AutoSAE.from_pretrained(tmp_path)


def test_missing_input_scale_is_refused_not_replaced_by_one(tmp_path):
    _saved("hubsae_topk", tmp_path, input_norm="scale", input_scale=2.9)
    _edit_config(tmp_path, lambda cfg: {k: v for k, v in cfg.items() if k != "input_scale"})
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'} lacks the field\(s\) \['input_scale'\]"):
        hubsae.AutoSAE.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"\['k'\]"):  # the class's own loader is as strict as AutoSAE
        _edit_config(tmp_path, lambda cfg: {k: v for k, v in cfg.items() if k != "k"} | {"input_scale": 2.9})
        hubsae.TopKSAE.from_pretrained(tmp_path)


def test_fields_with_safe_defaults_may_be_missing(tmp_path):
    sae = _saved("hubsae_topk", tmp_path)
    safe = REGISTRY["hubsae_topk"][0].defaults_safe_when_missing
    _edit_config(tmp_path, lambda cfg: {k: v for k, v in cfg.items() if k not in safe and k != "dtype"})
    loaded = hubsae.AutoSAE.from_pretrained(tmp_path)
    x = torch.randn(3, sae.config.d_in)
    assert loaded.config.hookpoint is None and torch.equal(loaded(x).reconstruction, sae(x).reconstruction)


def test_a_field_passed_explicitly_need_not_be_in_the_file(tmp_path):
    _saved("hubsae_topk", tmp_path)
    _edit_config(tmp_path, lambda cfg: {k: v for k, v in cfg.items() if k != "k"})
    assert hubsae.TopKSAE.from_pretrained(tmp_path, k=3).config.k == 3


def test_model_type_of_another_class_is_refused(tmp_path):
    _saved("hubsae_relu", tmp_path)
    with pytest.raises(ValueError, match=r"model_type='hubsae_relu', not 'hubsae_topk'.*AutoSAE"):
        hubsae.TopKSAE.from_pretrained(tmp_path)


@pytest.mark.parametrize("content", [[1, 2], "d_in", 3, None])
def test_config_that_is_not_a_json_object(content, tmp_path):
    _saved("hubsae_topk", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(content))
    kind = type(content).__name__
    for load in (hubsae.AutoSAE.from_pretrained, hubsae.TopKSAE.from_pretrained):
        with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'} must hold a JSON object.*got a JSON {kind}"):
            load(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("tensor", ["W_enc", "b_dec"])
def test_non_finite_weights_are_refused_naming_the_tensor(bad, tensor, tmp_path):
    _saved("hubsae_topk", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights[tensor].view(-1)[0] = bad
    save_file(weights, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises(ValueError, match=rf"weight {tensor} .* holds 1 NaN or Inf"):
        hubsae.AutoSAE.from_pretrained(tmp_path)


def test_overflow_when_cast_to_float16_is_refused(tmp_path):
    _saved("hubsae_relu", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["W_dec"][0, 0] = 1e6  # finite in float32, Inf in float16
    save_file(weights, tmp_path / "model.safetensors", {"format": "pt"})
    assert hubsae.AutoSAE.from_pretrained(tmp_path).W_dec[0, 0] == 1e6
    with pytest.raises(ValueError, match=r"weight W_dec .*torch.float16.* NaN or Inf"):
        hubsae.AutoSAE.from_pretrained(tmp_path, dtype=torch.float16)


@pytest.mark.parametrize(("dtype", "name"), [(torch.int32, "I32"), (torch.int64, "I64"), (torch.bool, "BOOL")])
def test_integer_and_bool_weights_are_refused_not_cast(dtype, name, tmp_path):
    _saved("hubsae_topk", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["b_enc"] = (weights["b_enc"] * 100).to(dtype)
    save_file(weights, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises(ValueError, match=rf"not floating point: b_enc \({name}\)"):
        hubsae.AutoSAE.from_pretrained(tmp_path)


def test_float16_weights_load_into_the_config_dtype(tmp_path):
    sae = _saved("hubsae_topk", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v.half() for k, v in weights.items()}, tmp_path / "model.safetensors", {"format": "pt"})
    loaded = hubsae.AutoSAE.from_pretrained(tmp_path)
    assert torch.equal(loaded.W_enc, sae.W_enc.half().float())


class _TouchOnUnpickle:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_weights_are_refused_unopened_by_the_class_loader(tmp_path):
    _saved("hubsae_topk", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"W_enc": _TouchOnUnpickle(marker)}))
    with pytest.raises(FileNotFoundError, match="never unpickles") as err:
        hubsae.TopKSAE.from_pretrained(tmp_path)
    assert "weights_only" not in str(err.value)  # not torch's advice to unpickle it after all
    with pytest.raises(ValueError, match="use_safetensors=False is not supported.*never unpickles"):
        hubsae.TopKSAE.from_pretrained(tmp_path, use_safetensors=False)
    with pytest.raises(ValueError, match="never unpickles"):
        hubsae.AutoSAE.from_pretrained(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("model_type", ["hubsae_topk", "hubsae_jumprelu"])
def test_wrong_input_dtype_names_both_dtypes_and_the_fix(model_type):
    sae = hubsae.AutoSAE.from_config(make_config(model_type)).to(torch.float16)
    x = torch.randn(3, sae.config.d_in)
    with pytest.raises(
        TypeError, match=r"torch.float16 weights but got torch.float32 activations.*x.to\(torch.float16\)"
    ):
        sae.encode(x)
    with pytest.raises(TypeError, match=r"got torch.int64 activations"):
        sae(x.long())
    assert sae.encode(x.half()).dtype == torch.float16
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts matmul inputs itself
        assert sae.float().encode(x.bfloat16()).shape[-1] == sae.config.d_sae
