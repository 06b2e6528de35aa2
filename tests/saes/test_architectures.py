"""Each architecture's own math, checked against an independent computation."""

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

import hubsae
from hubsae.saes.jumprelu import jumprelu, step
from hubsae.saes.sparse import auxk_loss


def test_topk_l0_equals_k_and_matches_manual():
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=40, k=5)).eval()
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: exactly k nonzeros
    x = torch.randn(6, 8)
    f = sae.encode(x)
    assert ((f != 0).sum(-1) == 5).all()
    a = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    manual = torch.zeros_like(a)
    for row in range(6):
        top = sorted(range(40), key=lambda j: -a[row, j].item())[:5]
        manual[row, top] = a[row, top]
    torch.testing.assert_close(f, manual)
    idx, vals = sae.encode_sparse(x)
    torch.testing.assert_close(sae.decode_sparse(idx, vals), sae.decode(f), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [0, -1, 41])
def test_topk_bad_k(k):
    with pytest.raises(StrictDataclassClassValidationError, match=f"k={k} must satisfy 0 < k <= d_sae=40"):
        hubsae.TopKSAEConfig(d_in=8, d_sae=40, k=k)


def test_config_type_and_value_errors():
    with pytest.raises(Exception, match="d_in"):
        hubsae.TopKSAEConfig(d_in="eight")
    with pytest.raises(StrictDataclassClassValidationError, match="input_norm"):
        hubsae.ReLUSAEConfig(input_norm="zscore")
    with pytest.raises(StrictDataclassClassValidationError, match="d_in and d_sae must be positive"):
        hubsae.ReLUSAEConfig(d_sae=0)


def test_batchtopk_training_keeps_k_times_batch_and_learns_threshold():
    sae = hubsae.BatchTopKSAE(hubsae.BatchTopKSAEConfig(d_in=8, d_sae=32, k=3, threshold_beta=0.5))
    with torch.no_grad():
        sae.b_enc.fill_(5.0)
    x = torch.randn(10, 8)
    sae.train()
    f = sae(x).features
    assert int((f != 0).sum()) == 30  # k * batch, spread unevenly over tokens
    kept_min = f[f > 0].min()
    assert sae.threshold.item() == pytest.approx(kept_min.item())
    f2 = sae(x * 0.5).features
    assert sae.threshold.item() == pytest.approx(0.5 * kept_min.item() + 0.5 * f2[f2 > 0].min().item())
    sae.eval()
    a = sae.pre_acts(x)
    torch.testing.assert_close(sae.encode(x), a * (a > sae.threshold))


def test_batchtopk_before_threshold_uses_per_token_topk():
    sae = hubsae.BatchTopKSAE(hubsae.BatchTopKSAEConfig(d_in=8, d_sae=32, k=3)).eval()
    with torch.no_grad():
        sae.b_enc.fill_(5.0)
    assert ((sae.encode(torch.randn(4, 8)) != 0).sum(-1) == 3).all()


def test_relu_l1_is_decoder_norm_weighted():
    sae = hubsae.ReLUSAE(hubsae.ReLUSAEConfig(d_in=8, d_sae=16, l1_coefficient=2.0))
    x = torch.randn(5, 8)
    out = sae(x, compute_losses=True)
    f = torch.relu(x @ sae.W_enc + sae.b_enc)  # no b_dec subtraction in the April update
    torch.testing.assert_close(out.features, f)
    l1 = sum(f[:, i] * sae.W_dec[i].norm() for i in range(16)).mean()
    torch.testing.assert_close(out.losses["l1"], l1)
    torch.testing.assert_close(out.loss, out.losses["mse"] + 2.0 * l1)
    assert sae.W_dec.norm(dim=-1).allclose(torch.full((16,), 0.1))


def test_jumprelu_forward_and_straight_through_gradients():
    eps = 0.1
    a = torch.tensor([[0.20, 0.52, 0.90], [0.48, 0.10, 1.00]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.93], requires_grad=True)
    out = jumprelu(a, theta, eps)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.52, 0.0], [0.0, 0.0, 1.0]]))
    out.sum().backward()
    torch.testing.assert_close(a.grad, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    # -(theta/eps) * 1[|a - theta| < eps/2] summed over rows: 0.48, 0.52 and 0.90 fall in a window
    torch.testing.assert_close(theta.grad, torch.tensor([-5.0, -5.0, -9.3]))
    a.grad = theta.grad = None
    step(a, theta, eps).sum().backward()
    torch.testing.assert_close(a.grad, torch.zeros_like(a))
    torch.testing.assert_close(theta.grad, torch.tensor([-10.0, -10.0, -10.0]))


def test_jumprelu_target_l0_loss():
    cfg = hubsae.JumpReLUSAEConfig(d_in=8, d_sae=16, sparsity_loss="target_l0", target_l0=4.0)
    sae = hubsae.JumpReLUSAE(cfg)
    x = torch.randn(6, 8)
    out = sae(x, compute_losses=True)
    l0 = (out.features != 0).sum(-1).float().mean()
    torch.testing.assert_close(out.losses["l0"], (l0 / 4 - 1) ** 2)
    with pytest.raises(StrictDataclassClassValidationError, match="target_l0"):
        hubsae.JumpReLUSAEConfig(sparsity_loss="target_l0")


def test_gated_matches_paper_formula():
    sae = hubsae.GatedSAE(hubsae.GatedSAEConfig(d_in=8, d_sae=16, l1_coefficient=0.5))
    with torch.no_grad():
        sae.r_mag.normal_()
        sae.b_mag.normal_()
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x = torch.randn(5, 8)
    out = sae(x, compute_losses=True)
    xc = x - sae.b_dec
    pi_gate = xc @ sae.W_enc + sae.b_enc
    w_mag = sae.W_enc * sae.r_mag.exp()  # diag(exp(r_mag)) W_gate, column-wise here
    f = (pi_gate > 0).float() * torch.relu(xc @ w_mag + sae.b_mag)
    torch.testing.assert_close(out.features, f)
    aux = (x - (torch.relu(pi_gate) @ sae.W_dec + sae.b_dec)).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.losses["gate_mse"], aux)
    torch.testing.assert_close(out.losses["l1"], torch.relu(pi_gate).sum(-1).mean())


def test_auxk_loss_uses_only_dead_latents():
    W_dec = torch.randn(6, 4)
    residual = torch.randn(3, 4)
    pre = torch.randn(3, 6).abs()
    dead = torch.tensor([True, False, True, False, False, True])
    got = auxk_loss(residual, pre, dead, k_aux=2, W_dec=W_dec)
    e_hat = torch.zeros(3, 4)
    for r in range(3):
        dead_idx = [i for i in range(6) if dead[i]]
        top = sorted(dead_idx, key=lambda i: -pre[r, i].item())[:2]
        e_hat[r] = sum(pre[r, i] * W_dec[i] for i in top)
    expect = (residual - e_hat).pow(2).sum(-1).mean()  # raw, in the MSE's units (summed over d_in)
    torch.testing.assert_close(got, expect)
    assert auxk_loss(residual, pre, torch.zeros(6, dtype=torch.bool), 2, W_dec).item() == 0


@pytest.mark.parametrize("norm", ["scale", "token"])
def test_input_normalization_is_undone(norm):
    """A perfect dictionary (identity, enough latents) reconstructs in the input's own units."""
    cfg = hubsae.ReLUSAEConfig(d_in=4, d_sae=8, input_norm=norm, input_scale=0.25, subtract_b_dec=False)
    sae = hubsae.ReLUSAE(cfg).eval()
    with torch.no_grad():  # latents +e_i and -e_i: ReLU codes reconstruct any vector exactly
        sae.W_enc.copy_(torch.cat([torch.eye(4), -torch.eye(4)], 1))
        sae.W_dec.copy_(sae.W_enc.t())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.randn(3, 4) * 7 + 2
    torch.testing.assert_close(sae(x).reconstruction, x)
    if norm == "scale":
        torch.testing.assert_close(sae.encode(x).abs().sum(-1), (x * 0.25).abs().sum(-1))
        torch.testing.assert_close(sae.decode(sae.encode(x)), x)


def test_unknown_architecture_and_missing_config(tmp_path):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2))
    sae.save_pretrained(tmp_path / "layer")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        hubsae.AutoSAE.from_pretrained(tmp_path, subfolder="missing")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        hubsae.TopKSAE.from_pretrained(tmp_path, subfolder="missing")
    assert type(hubsae.AutoSAE.from_pretrained(tmp_path, subfolder="layer")) is hubsae.TopKSAE
    cfg = json.loads((tmp_path / "layer" / "config.json").read_text())
    cfg["model_type"] = "hubsae_nonexistent"
    (tmp_path / "layer" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown SAE architecture model_type='hubsae_nonexistent'.*hubsae_topk"):
        hubsae.AutoSAE.from_pretrained(tmp_path / "layer")


def test_registering_a_second_class_under_a_taken_name_fails():
    from hubsae.saes import register

    class Other(hubsae.TopKSAE):
        config_class = hubsae.TopKSAEConfig

    with pytest.raises(ValueError, match="already registered"):
        register(hubsae.TopKSAEConfig, Other)


def test_batchtopk_encode_sparse_follows_the_threshold():
    sae = hubsae.BatchTopKSAE(hubsae.BatchTopKSAEConfig(d_in=8, d_sae=32, k=3)).eval()
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.threshold.fill_(0.3)
    x = torch.randn(6, 8)
    idx, vals = sae.encode_sparse(x)
    dense = torch.zeros(6, 32).scatter_(-1, idx, vals)
    torch.testing.assert_close(dense, sae.encode(x))
    assert idx.shape[-1] == int((sae.encode(x) != 0).sum(-1).max())  # not a fixed k
    torch.testing.assert_close(sae.decode_sparse(idx, vals), sae.decode(sae.encode(x)), rtol=1e-5, atol=1e-5)


def test_offline_missing_repo_says_it_is_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    from hubsae.saes.loading import resolve_file

    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        resolve_file("nobody/never-downloaded", "config.json", local_files_only=True)
