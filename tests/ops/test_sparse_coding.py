"""The sparse training path against the plain dense path: same losses, outputs and gradients.

Tolerances: float32 rtol 1e-5 / atol 1e-5 (the two paths sum the same products in a different
order); bfloat16 parameters: identical features, each loss within 2% and each gradient within 3%
relative L2 error, on a problem whose top-k choices bf16 rounding cannot flip (the sparse
backward accumulates in float32, the plain one in bfloat16).
"""

import pytest
import torch

import hubsae.saes.topk as topk_module
from hubsae.ops import ENV_SWITCH
from hubsae.saes import (
    BatchTopKSAE,
    BatchTopKSAEConfig,
    KronSAE,
    KronSAEConfig,
    MatryoshkaSAE,
    MatryoshkaSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

D_IN, D_SAE, K = 16, 64, 4
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
ARCHS = {"topk": (TopKSAE, TopKSAEConfig), "batchtopk": (BatchTopKSAE, BatchTopKSAEConfig)}


def make_sae(arch: str, dtype=torch.float32, **overrides):
    model_cls, config_cls = ARCHS[arch]
    config = config_cls(d_in=D_IN, d_sae=D_SAE, k=K, k_aux=6, **overrides)
    torch.manual_seed(0)
    sae = model_cls(config)
    with torch.no_grad():  # non-trivial biases so that every gradient path carries signal
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.5)
        sae.W_enc.mul_(torch.rand_like(sae.W_enc) + 0.5)
    return sae.to(dtype).train()


def run_step(sae, x, dead_mask, sparse: bool, monkeypatch):
    """One training forward + backward; returns (output, {name: grad}, input grad)."""
    monkeypatch.setenv(ENV_SWITCH, "1" if sparse else "0")
    sae.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = sae(x, dead_mask=dead_mask)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    return out, grads, x.grad


def dead_mask_for(kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    generator = torch.Generator().manual_seed(1)
    if kind == "few":  # fewer dead latents than k_aux: AuxK takes all of them
        return torch.randperm(D_SAE, generator=generator) < 3
    return torch.rand(D_SAE, generator=generator) < 0.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("dead", ["none", "few", "half"])
@pytest.mark.parametrize("subtract_b_dec", [True, False])
def test_sparse_path_matches_dense_float32(arch, dead, subtract_b_dec, device, monkeypatch):
    sae = make_sae(arch, subtract_b_dec=subtract_b_dec).to(device)
    x = (torch.randn(3, 9, D_IN, generator=torch.Generator().manual_seed(2)) * 2).to(device)
    dead_mask = dead_mask_for(dead)
    dead_mask = dead_mask.to(device) if dead_mask is not None else None
    plain, plain_grads, plain_dx = run_step(sae, x, dead_mask, False, monkeypatch)
    plain_threshold = sae.threshold.clone() if arch == "batchtopk" else None
    if arch == "batchtopk":
        sae.threshold.fill_(-1.0)
    fast, fast_grads, fast_dx = run_step(sae, x, dead_mask, True, monkeypatch)
    tol = dict(rtol=1e-5, atol=1e-5)
    assert set(fast.losses) == set(plain.losses)
    for name in plain.losses:
        torch.testing.assert_close(fast.losses[name], plain.losses[name], **tol)
    if dead != "none":
        assert plain.losses["auxk"] > 0  # the AuxK branch really ran
    torch.testing.assert_close(fast.loss, plain.loss, **tol)
    torch.testing.assert_close(fast.reconstruction, plain.reconstruction, **tol)
    torch.testing.assert_close(fast.features, plain.features, **tol)
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0 or name == "b_dec", name
        torch.testing.assert_close(fast_grads[name], grad, **tol, msg=lambda m, n=name: f"grad of {n}: {m}")
    torch.testing.assert_close(fast_dx, plain_dx, **tol)
    if arch == "batchtopk":
        torch.testing.assert_close(sae.threshold, plain_threshold)


def separated_problem(arch: str, n_tok: int = 8, width: int = 64):
    """bfloat16 SAE and input whose top-k choices survive bf16 rounding: W_enc, W_dec permutations,
    W_dec = W_enc^T / 2, zero biases, and inputs whose |values| are distinct powers of 1.01 (spacing 1% > bf16's 0.4%)."""
    model_cls, config_cls = ARCHS[arch]
    sae = model_cls(config_cls(d_in=width, d_sae=width, k=K, k_aux=6))
    gen = torch.Generator().manual_seed(6)
    perm = torch.randperm(width, generator=gen)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(width)[:, perm])
        sae.W_dec.copy_(0.5 * sae.W_enc.t())  # x_hat != x on the kept latents: every gradient is nonzero
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    magnitudes = 1.01 ** torch.randperm(n_tok * width, generator=gen).float()
    signs = torch.where(torch.rand(n_tok * width, generator=gen) < 0.5, -1.0, 1.0)
    x = (magnitudes * signs).reshape(n_tok, width)
    return sae.bfloat16().train(), x.bfloat16()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_path_matches_dense_bfloat16(arch, device, monkeypatch):
    sae, x = separated_problem(arch)
    sae, x = sae.to(device), x.to(device)
    dead_mask = (torch.rand(x.shape[1], generator=torch.Generator().manual_seed(7)) < 0.5).to(device)
    plain, plain_grads, _ = run_step(sae, x, dead_mask, False, monkeypatch)
    if arch == "batchtopk":
        sae.threshold.fill_(-1.0)
    fast, fast_grads, _ = run_step(sae, x, dead_mask, True, monkeypatch)
    torch.testing.assert_close(fast.features, plain.features, rtol=0, atol=0)  # same selection
    for name in plain.losses:
        torch.testing.assert_close(fast.losses[name].float(), plain.losses[name].float(), rtol=2e-2, atol=1e-3)
    for name, grad in plain_grads.items():
        assert fast_grads[name].dtype == torch.bfloat16
        err = (fast_grads[name].float() - grad.float()).norm() / grad.float().norm().clamp_min(1e-6)
        assert err < 3e-2, f"{name}: relative error {err:.3f}"


@CUDA
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_path_matches_dense_under_cuda_autocast(arch, monkeypatch):
    """float32 parameters, bf16 autocast (the benchmark's GPU setting), on the separated problem."""
    sae, x = separated_problem(arch)
    sae, x = sae.float().cuda(), x.float().cuda()
    dead_mask = (torch.rand(x.shape[1], generator=torch.Generator().manual_seed(7)) < 0.5).cuda()
    results = []
    for sparse in (False, True):
        if arch == "batchtopk":
            sae.threshold.fill_(-1.0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            results.append(run_step(sae, x, dead_mask, sparse, monkeypatch))
    (plain, plain_grads, _), (fast, fast_grads, _) = results
    torch.testing.assert_close(fast.loss.float(), plain.loss.float(), rtol=2e-2, atol=1e-3)
    for name, grad in plain_grads.items():
        err = (fast_grads[name].float() - grad.float()).norm() / grad.float().norm().clamp_min(1e-6)
        assert err < 3e-2, f"{name}: relative error {err:.3f}"


def test_token_input_norm_and_adam_trajectory(monkeypatch):
    """Three Adam steps on each path from the same start end at the same parameters."""
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(4)) * 3 + 1
    finals = []
    for sparse in (False, True):
        sae = make_sae("topk", input_norm="token")
        opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
        for _ in range(3):
            _, grads, _ = run_step(sae, x, dead_mask_for("half"), sparse, monkeypatch)
            opt.step()
        finals.append({n: p.detach().clone() for n, p in sae.named_parameters()})
    for name in finals[0]:
        torch.testing.assert_close(finals[1][name], finals[0][name], rtol=1e-4, atol=1e-5)


def test_no_dense_latent_tensor_saved_for_backward(monkeypatch):
    """Autograd keeps nothing (N, d_sae)-sized between forward and backward on the sparse path."""
    sae = make_sae("topk")
    x = torch.randn(40, D_IN)
    shapes = []
    monkeypatch.setenv(ENV_SWITCH, "1")

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sae(x, dead_mask=dead_mask_for("half")).loss.backward()
    assert shapes and all(s != (40, D_SAE) for s in shapes), shapes
    monkeypatch.setenv(ENV_SWITCH, "0")  # the plain path does keep such tensors: the check can fail
    shapes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sae(x, dead_mask=dead_mask_for("half")).loss.backward()
    assert (40, D_SAE) in shapes


def _forbid_sparse(*args, **kwargs):
    raise AssertionError("the sparse path ran")


def test_training_paths_and_env_switch(monkeypatch):
    """Matryoshka and KronSAE never take TopK's sparse path; TopK does unless switched off."""
    monkeypatch.setattr(topk_module, "sparse_topk_code", _forbid_sparse)
    monkeypatch.setenv(ENV_SWITCH, "1")
    x = torch.randn(8, D_IN)
    matryoshka = MatryoshkaSAE(MatryoshkaSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, group_sizes=[16, 48])).train()
    kron = KronSAE(KronSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, num_heads=4, m=2, n=8)).train()
    for sae in (matryoshka, kron):
        sae(x).loss.backward()
    assert make_sae("batchtopk").train().training_path() == "sparse"
    assert make_sae("batchtopk").eval().training_path() == "dense"  # eval uses the threshold
    with pytest.raises(AssertionError, match="sparse path ran"):
        make_sae("topk")(x)
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert make_sae("topk").training_path() == "dense"
    make_sae("topk")(x).loss.backward()
    make_sae("topk")(x, compute_losses=False)  # no losses: plain path either way
