"""Every registered architecture through the common contract (like transformers' ModelTesterMixin)."""

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

import hubsae
from hubsae.saes import REGISTRY

D_IN, D_SAE, K = 16, 64, 4
# architectures whose sizes are constrained beyond d_sae (KronSAE: d_sae = h*m*n; Switch: experts)
STRUCTURE = {"hubsae_kron": dict(num_heads=4, m=2, n=8), "hubsae_switch": dict(num_experts=4)}


def make_config(model_type: str, **overrides):
    config_cls = REGISTRY[model_type][0]
    kwargs = dict(d_in=D_IN, d_sae=D_SAE, hookpoint="model.layers.1", base_model_name_or_path="tiny")
    if "k" in config_cls.__dataclass_fields__:
        kwargs["k"] = K
    # light penalties so the synthetic problem below is dominated by reconstruction
    for name, value in (("l1_coefficient", 1e-3), ("l0_coefficient", 1e-3)):
        if name in config_cls.__dataclass_fields__:
            kwargs[name] = value
    kwargs.update(STRUCTURE.get(model_type, {}))
    kwargs.update(overrides)
    return config_cls(**kwargs)


ARCHS = sorted(REGISTRY)


@pytest.fixture(params=ARCHS)
def sae(request):
    return hubsae.AutoSAE.from_config(make_config(request.param)).eval()


def test_forward_shapes(sae):
    x = torch.randn(2, 3, D_IN)
    out = sae(x)
    assert out.reconstruction.shape == x.shape
    assert out.features.shape == (2, 3, D_SAE)
    assert sae.encode(x).shape == (2, 3, D_SAE)
    assert sae.decode(sae.encode(x)).shape == x.shape
    assert out.loss is None  # eval mode, losses not asked for


def test_forward_equals_encode_decode(sae):
    x = torch.randn(5, D_IN)
    out = sae(x)
    torch.testing.assert_close(out.features, sae.encode(x))
    torch.testing.assert_close(out.reconstruction, sae.decode(sae.encode(x)))


def test_features_nonnegative_and_sparse_decode_matches_dense(sae):
    x = torch.randn(7, D_IN)
    f = sae.encode(x)
    assert (f >= 0).all()
    vals, idx = f.topk(D_SAE, dim=-1)
    torch.testing.assert_close(sae.decode_sparse(idx, vals), sae.decode(f), rtol=1e-5, atol=1e-5)


def test_gradient_reaches_every_parameter(sae):
    sae.train()
    x = torch.randn(64, D_IN) * 2
    dead = torch.ones(D_SAE, dtype=torch.bool)  # exercise AuxK where it exists
    out = sae(x, dead_mask=dead)
    out.loss.backward()
    for name, p in sae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_loss_decreases_on_synthetic_dictionary(sae):
    """Data made of k-sparse combinations of a random dictionary: training must cut the loss."""
    g = torch.Generator().manual_seed(1)
    atoms = torch.nn.functional.normalize(torch.randn(D_SAE, D_IN, generator=g), dim=-1)
    codes = torch.zeros(2048, D_SAE)
    idx = torch.randint(0, D_SAE, (2048, K), generator=g)
    codes.scatter_(1, idx, torch.rand(2048, K, generator=g) + 0.5)
    data = codes @ atoms
    sae.train()
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    first = None
    for step in range(300):
        batch = data[(step * 128) % 2048 :][:128]
        loss = sae(batch).losses["mse"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        sae(batch).loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
    sae.eval()
    final = sae(data, compute_losses=True).losses["mse"].item()
    assert final < 0.5 * first, (first, final)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_bit_exact(sae, tmp_path, dtype):
    sae = sae.to(dtype)
    sae.save_pretrained(tmp_path)
    loaded = hubsae.AutoSAE.from_pretrained(tmp_path)
    assert type(loaded) is type(sae)
    assert loaded.config.to_diff_dict() == sae.config.to_diff_dict()
    ref, got = sae.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert got[key].dtype == dtype and torch.equal(got[key], ref[key]), key
    x = torch.randn(4, D_IN, dtype=dtype)
    assert torch.equal(loaded(x).reconstruction, sae(x).reconstruction)


def test_auto_classes_dispatch(sae, tmp_path):
    from transformers import AutoConfig, AutoModel

    sae.save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is type(sae)
    assert type(AutoConfig.from_pretrained(tmp_path)) is type(sae.config)
    assert json.loads((tmp_path / "config.json").read_text())["hookpoint"] == "model.layers.1"


def test_meta_device_construction(sae):
    with torch.device("meta"):
        meta = type(sae)(sae.config)
    assert all(p.is_meta for p in meta.parameters())


def test_missing_and_unexpected_keys_raise(sae, tmp_path):
    sae.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "b_dec"}, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises(ValueError, match="missing weights.*b_dec"):
        hubsae.AutoSAE.from_pretrained(tmp_path)
    save_file({**weights, "extra": torch.zeros(3)}, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises(ValueError, match="unexpected weights.*extra"):
        hubsae.AutoSAE.from_pretrained(tmp_path)


def test_wrong_shape_in_file_raises(sae, tmp_path):
    sae.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["W_enc"] = torch.zeros(D_IN + 1, D_SAE)
    save_file(weights, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises((ValueError, RuntimeError), match="W_enc"):
        hubsae.AutoSAE.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_weights_file_raises(sae, tmp_path, damage):
    sae.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"\x07" * 64 + blob[64:])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        hubsae.AutoSAE.from_pretrained(tmp_path)


def test_wrong_d_in_names_the_shape_and_hookpoint(sae):
    with pytest.raises(ValueError, match=r"d_in=16 at hookpoint 'model.layers.1', got shape \(2, 17\)"):
        sae.encode(torch.randn(2, D_IN + 1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_raises(sae, bad):
    x = torch.randn(3, D_IN)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        sae(x)
    sae.config.check_finite = False
    assert sae(x).features.shape == (3, D_SAE)  # opt-out returns whatever the math gives


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_saved_files_get_the_umask_mode_not_0600(sae, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        sae.save_pretrained(tmp_path)
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
