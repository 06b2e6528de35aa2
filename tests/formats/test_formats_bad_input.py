"""Folders that must not load: clear errors naming the problem, and pickles never opened."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import hubsae
from hubsae import AutoSAE


class _TouchOnUnpickle:
    """Unpickling this creates a file: the proof that a loader unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _saelens_files(folder, d_in=8, d_sae=16, drop=()):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"d_in": d_in, "d_sae": d_sae, "architecture": "standard", "metadata": {"hook_name": "model.layers.0"}}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    t = {
        "W_enc": torch.randn(d_in, d_sae),
        "W_dec": torch.randn(d_sae, d_in),
        "b_enc": torch.zeros(d_sae),
        "b_dec": torch.zeros(d_in),
    }
    save_file({k: v for k, v in t.items() if k not in drop}, folder / "sae_weights.safetensors")


def test_folder_with_two_formats(tmp_path):
    _saelens_files(tmp_path)
    np.savez(tmp_path / "params.npz", W_enc=np.zeros((8, 16), np.float32))
    with pytest.raises(
        ValueError, match=r"files of 2 SAE formats: SAELens \(cfg.json, sae_weights.safetensors\); Gemma Scope"
    ):
        AutoSAE.from_pretrained(tmp_path)
    hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2)).save_pretrained(tmp_path / "both")
    _saelens_files(tmp_path / "both")
    with pytest.raises(ValueError, match="hubsae.*SAELens"):
        AutoSAE.from_pretrained(tmp_path / "both")


def test_pickle_only_checkpoint_is_refused_unopened(tmp_path):
    marker = tmp_path / "unpickled"
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "sae.pt").write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    (folder / "cfg.json").write_text(json.dumps({"d_in": 8, "k": 2}))
    with pytest.raises(ValueError, match=r"only pickle checkpoints \['sae.pt'\].*never unpickles"):
        AutoSAE.from_pretrained(folder)
    assert not marker.exists()
    pickle.loads((folder / "sae.pt").read_bytes())  # the file is live: unpickling it does create the marker
    assert marker.exists()


def test_npz_with_pickled_objects_is_not_unpickled(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "width_4k" / "average_l0_5"
    folder.mkdir(parents=True)
    marker = tmp_path / "unpickled"
    np.savez(folder / "params.npz", W_enc=np.array([_TouchOnUnpickle(marker)], dtype=object))
    with pytest.raises(ValueError, match="not a readable npz archive"):
        AutoSAE.from_pretrained(folder)
    assert not marker.exists()


def test_unknown_and_incomplete_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"not an SAE folder of a known format; it holds \['notes.txt'\]"):
        AutoSAE.from_pretrained(tmp_path)
    _saelens_files(tmp_path / "s", drop=("b_enc",))
    with pytest.raises(ValueError, match=r"sae_weights.safetensors lacks \['b_enc'\]"):
        AutoSAE.from_pretrained(tmp_path / "s")
    _saelens_files(tmp_path / "shape", d_in=8)
    cfg = json.loads((tmp_path / "shape" / "cfg.json").read_text())
    (tmp_path / "shape" / "cfg.json").write_text(json.dumps({**cfg, "d_in": 9}))
    with pytest.raises(ValueError, match=r"wrong shape for d_in=9.*W_enc: \(8, 16\)"):
        AutoSAE.from_pretrained(tmp_path / "shape")


def test_unsupported_variants_are_named(tmp_path):
    folder = tmp_path / "layers.0"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"d_in": 8, "k": 2, "activation": "groupmax", "num_latents": 16}))
    save_file({"encoder.weight": torch.zeros(16, 8)}, folder / "sae.safetensors")
    with pytest.raises(ValueError, match="activation 'groupmax' is not supported"):
        AutoSAE.from_pretrained(folder)
    with pytest.raises(TypeError, match="does not take \\['revision_hint'\\]"):
        _saelens_files(tmp_path / "kw")
        AutoSAE.from_pretrained(tmp_path / "kw", revision_hint=1)


def _rewrite_saelens_weights(folder, edit) -> None:
    path = folder / "sae_weights.safetensors"
    weights = load_file(path)
    edit(weights)
    save_file(weights, path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_converted_weights_with_nan_or_inf_are_refused_naming_the_tensor(bad, tmp_path):
    _saelens_files(tmp_path)
    _rewrite_saelens_weights(tmp_path, lambda w: w["W_dec"].view(-1).__setitem__(3, bad))
    with pytest.raises(ValueError, match=r"sae_weights.safetensors: weight W_dec \(16, 8\).* holds 1 NaN or Inf"):
        AutoSAE.from_pretrained(tmp_path)


def test_nan_made_by_a_conversion_is_refused(tmp_path):
    _saelens_files(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg |= {"architecture": "topk", "k": 2, "rescale_acts_by_decoder_norm": True}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    _rewrite_saelens_weights(tmp_path, lambda w: w["W_dec"][5].zero_())  # folding divides by this row's norm
    with pytest.raises(ValueError, match=r"converted to TopKSAE\): weight W_dec .* NaN or Inf"):
        AutoSAE.from_pretrained(tmp_path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_converted_integer_or_bool_weights_are_refused_not_cast(dtype, tmp_path):
    _saelens_files(tmp_path)
    _rewrite_saelens_weights(tmp_path, lambda w: w.__setitem__("b_enc", w["b_enc"].to(dtype)))
    with pytest.raises(ValueError, match=rf"not floating point: b_enc \({dtype}\)"):
        AutoSAE.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["cfg.json", "hyperparams.json"])
def test_format_config_that_is_not_a_json_object(name, tmp_path):
    _saelens_files(tmp_path)
    if name == "hyperparams.json":  # Llama Scope
        (tmp_path / "cfg.json").unlink()
        (tmp_path / "sae_weights.safetensors").unlink()
        (tmp_path / "checkpoints").mkdir()
        save_file({"encoder.weight": torch.zeros(16, 8)}, tmp_path / "checkpoints" / "final.safetensors")
    (tmp_path / name).write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{name} must hold a JSON object.*got a JSON list"):
        AutoSAE.from_pretrained(tmp_path)
