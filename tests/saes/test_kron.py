"""KronSAE: mAND, the post-latent index order, global TopK, init, FLOPs, Matryoshka/JumpReLU variants."""

import math

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch.utils.flop_counter import FlopCounterMode

import hubsae
from hubsae.saes.kron import kron_flops, mand, topk_flops


def make(**kw):
    cfg = dict(d_in=12, d_sae=48, num_heads=3, m=2, n=8, k=5)
    cfg.update(kw)
    return hubsae.KronSAE(hubsae.KronSAEConfig(**cfg))


def test_mand_values_and_exact_zeros():
    u = torch.tensor([2.0, 0.5, -1.0, 0.0, 3.0])
    v = torch.tensor([8.0, 0.5, 4.0, 1.0, -2.0])
    torch.testing.assert_close(mand(u, v, eps=0.0), torch.tensor([4.0, 0.5, 0.0, 0.0, 0.0]))
    guarded = mand(u, v, eps=1e-5)
    torch.testing.assert_close(guarded[:2], torch.tensor([math.sqrt(16 + 1e-5), math.sqrt(0.25 + 1e-5)]))
    assert (guarded[2:] == 0).all()  # inactive pairs are exactly zero, unlike App. H's sqrt(eps)


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_mand_gradient_matches_formula_and_is_zero_off_the_quadrant(eps):
    u = torch.tensor([2.0, 0.5, -1.0, 3.0, -0.5], requires_grad=True)
    v = torch.tensor([8.0, 0.5, 4.0, -2.0, -1.0], requires_grad=True)
    mand(u, v, eps).sum().backward()
    root = torch.sqrt(torch.tensor([16.0, 0.25]) + eps)
    torch.testing.assert_close(u.grad[:2], torch.tensor([8.0, 0.5]) / (2 * root))  # dz/du = v / (2 sqrt(uv+eps))
    torch.testing.assert_close(v.grad[:2], torch.tensor([2.0, 0.5]) / (2 * root))
    assert (u.grad[2:] == 0).all() and (v.grad[2:] == 0).all()  # no NaN from the inactive branch, even at eps=0


def test_mand_guard_bounds_the_gradient_near_zero():
    u = torch.tensor([1e-12], requires_grad=True)
    v = torch.tensor([1.0])
    mand(u, v, eps=1e-5).sum().backward()
    assert u.grad.item() == pytest.approx(1.0 / (2 * math.sqrt(1e-12 + 1e-5)))  # ~158, finite
    u2 = torch.tensor([1e-12], requires_grad=True)
    mand(u2, v, eps=0.0).sum().backward()
    assert u2.grad.item() == pytest.approx(0.5 / math.sqrt(1e-12))  # the singularity the guard removes


def test_post_latent_index_order_is_head_base_extension():
    sae = make(k=48).eval()
    x = torch.randn(4, 12)
    enc = (x @ sae.W_enc + sae.b_enc).reshape(4, 3, 10)  # fused encoder, per head [base m | extension n]
    u, v = enc[..., :2], enc[..., 2:]
    z = sae.pre_acts(x)
    for t in range(4):
        for head in range(3):
            for i in range(2):
                for j in range(8):
                    expect = mand(u[t, head, i], v[t, head, j], 1e-5)
                    assert z[t, head * 16 + i * 8 + j] == expect
    torch.testing.assert_close(sae.encode(x), z)  # k = F keeps everything


def test_global_topk_across_heads():
    sae = make(k=5).eval()
    with torch.no_grad():
        sae.b_enc.fill_(1.0)  # every pair active, so exactly k nonzeros
    x = torch.randn(6, 12)
    z, f = sae.pre_acts(x), sae.encode(x)
    assert ((f != 0).sum(-1) == 5).all()
    top = z.topk(5, dim=-1).indices
    manual = torch.zeros_like(z).scatter(-1, top, z.gather(-1, top))
    torch.testing.assert_close(f, manual)
    heads_used = {int(i) // 16 for i in f.nonzero()[:, 1]}
    assert len(heads_used) > 1  # one global TopK, not a per-head one
    idx, vals = sae.encode_sparse(x)
    torch.testing.assert_close(sae.decode_sparse(idx, vals), sae.decode(f), rtol=1e-5, atol=1e-5)


def test_initialization_from_parent_encoder_rows():
    sae = make(d_in=64, d_sae=512, num_heads=8, m=4, n=16)
    assert sae.W_enc.shape == (64, 8 * 20) and sae.b_enc.shape == (160,) and sae.W_dec.shape == (512, 64)
    assert sae.W_enc.std().item() == pytest.approx(1 / math.sqrt(2 * 512), rel=0.05)
    rows = sae.W_enc.T.reshape(8, 20, 64)
    for head, i, j in [(0, 0, 0), (3, 2, 7), (7, 3, 15)]:
        parent_sum = rows[head, i] + rows[head, 4 + j]
        torch.testing.assert_close(sae.W_dec[head * 64 + i * 16 + j], parent_sum / parent_sum.norm())
    assert (sae.b_enc == 0).all() and (sae.b_dec == 0).all()


def test_encoder_flops_are_h_times_m_plus_n_times_d():
    d, h, m, n, k, tokens = 64, 16, 2, 8, 8, 10
    sae = make(d_in=d, d_sae=h * m * n, num_heads=h, m=m, n=n, k=k).eval()
    assert all(p.numel() != d * h * m * n for name, p in sae.named_parameters() if name != "W_dec")
    with FlopCounterMode(display=False) as counter:
        sae.pre_acts(torch.randn(tokens, d))
    assert counter.get_total_flops() == 2 * tokens * d * h * (m + n)  # one fused matmul, 2 FLOPs per MAC
    assert sae.config.flops_per_token() == kron_flops(d, h, m, n, k) == d * h * (m + n) + m * n * h + k * d
    # the paper's cost model (arXiv 2505.22255, App. A.2, eq. 7): F = 32768, (m, n, h) = (4, 4, 2048) halves the encoder
    encoder = kron_flops(2304, 2048, 4, 4, 50) - 32768 - 50 * 2304
    assert encoder == 0.5 * (topk_flops(2304, 32768, 50) - 50 * 2304)


def test_config_validation_names_the_problem():
    with pytest.raises(
        StrictDataclassClassValidationError, match=r"d_sae = num_heads\*m\*n, got d_sae=50 but 3\*2\*8=48"
    ):
        hubsae.KronSAEConfig(d_in=12, d_sae=50, num_heads=3, m=2, n=8, k=5)
    with pytest.raises(StrictDataclassClassValidationError, match="multiple of 16"):
        hubsae.KronSAEConfig(d_in=12, d_sae=48, num_heads=3, m=2, n=8, k=5, group_sizes=[8, 40])
    with pytest.raises(StrictDataclassClassValidationError, match="composition"):
        hubsae.KronSAEConfig(d_in=12, d_sae=48, num_heads=3, m=2, n=8, k=5, composition="max")


@pytest.mark.parametrize("kind", ["relu_prod", "raw_prod"])
def test_ablation_compositions(kind):
    sae = make(composition=kind, k=48).eval()
    x = torch.randn(3, 12)
    enc = (x @ sae.W_enc + sae.b_enc).reshape(3, 3, 10)
    u, v = enc[..., :2, None], enc[..., None, 2:]
    z = (torch.relu(u) * torch.relu(v) if kind == "relu_prod" else u * v).reshape(3, 48)
    torch.testing.assert_close(sae.pre_acts(x), z)


def test_matryoshka_groups_compose_with_kron():
    sae = make(group_sizes=[16, 32]).train()
    x = torch.randn(20, 12)
    out = sae(x)
    f = out.features
    first = (x - (f[:, :16] @ sae.W_dec[:16] + sae.b_dec)).pow(2).sum(-1).mean()
    full = (x - (f @ sae.W_dec + sae.b_dec)).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.losses["prefix_mse"], (first + full) / 2)
    torch.testing.assert_close(out.loss, out.losses["prefix_mse"] + out.losses["auxk"] / 32)


def test_jumprelu_in_place_of_topk(tmp_path):
    sae = make(activation="jumprelu", l0_coefficient=0.1, bandwidth=0.1).train()
    with torch.no_grad():
        sae.threshold.fill_(0.05)
    x = torch.randn(30, 12)
    out = sae(x)
    z = sae.pre_acts(x)
    torch.testing.assert_close(out.features, z * (z > 0.05))
    torch.testing.assert_close(out.losses["l0"], (z > 0.05).float().sum(-1).mean())
    out.loss.backward()
    assert sae.threshold.grad is not None and sae.threshold.grad.abs().sum() > 0
    sae.save_pretrained(tmp_path)
    loaded = hubsae.AutoSAE.from_pretrained(tmp_path)
    assert torch.equal(loaded.threshold, sae.threshold)
    idx, vals = sae.eval().encode_sparse(x)
    assert idx.shape[-1] == int((out.features != 0).sum(-1).max())
    torch.testing.assert_close(sae.decode_sparse(idx, vals), sae.decode(sae.encode(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        hubsae.KronSAEConfig(d_in=32, d_sae=64, num_heads=4, m=2, n=8, k=4),
        hubsae.KronSAEConfig(d_in=32, d_sae=64, num_heads=4, m=2, n=8, k=4, activation="jumprelu"),
        hubsae.MatryoshkaSAEConfig(d_in=32, d_sae=64, k=4),
        hubsae.SwitchSAEConfig(d_in=32, d_sae=64, k=4, num_experts=4),
    ],
    ids=["kron", "kron-jumprelu", "matryoshka", "switch"],
)
def test_issue6_architectures_record_and_splice_on_a_tiny_llama(config):
    """KronSAE, Matryoshka and Switch hook into a model like any SAE (their sparse paths included)."""
    from tiny_models import tiny_llama

    from hubsae.hooks import record, splice

    model = tiny_llama(pad_token_id=None)
    config.hookpoint = "model.layers.1"
    sae = hubsae.AutoSAE.from_config(config).eval()
    ids = torch.randint(0, 128, (2, 7))
    seen = []
    handle = model.model.layers[2].register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("hidden_states", args[0] if args else None)), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(ids)
            with record(model, [sae]) as rec:
                model(ids)
            with splice(model, [sae]):
                model(ids)
    finally:
        handle.remove()
    h, spliced = seen[0], seen[-1]
    torch.testing.assert_close(rec[sae].to_dense(), sae.encode(h))
    torch.testing.assert_close(spliced, sae(h).reconstruction, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mand", "relu_prod", "raw_prod"])
def test_fast_topk_path_equals_dense_z_path_with_gradients(kind):
    """forward picks TopK on one-pass pair scores; it must equal TopK of the dense z, values and grads."""
    sae = make(composition=kind, k=6).train()
    x = torch.randn(32, 12)
    out = sae(x, compute_losses=True)
    dense_feats = hubsae.TopKSAE.activation(sae, sae.pre_acts(x))
    torch.testing.assert_close(out.features, dense_feats)
    (g_fast,) = torch.autograd.grad(out.losses["mse"], sae.W_enc)
    dense_mse = (x - (dense_feats @ sae.W_dec + sae.b_dec)).pow(2).sum(-1).mean()
    (g_dense,) = torch.autograd.grad(dense_mse, sae.W_enc)
    torch.testing.assert_close(g_fast, g_dense, rtol=1e-5, atol=1e-6)


# ---- the sparse Kron path (hubsae.ops.kron) against an independent dense computation -------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
KINDS = ["mand", "relu_prod", "raw_prod"]


def dense_topk_acts(z: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU'd TopK of each row of z over all its columns, the lower column first on ties."""
    order = torch.sort(z.detach(), dim=-1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(z).scatter(1, order, torch.relu(z.gather(1, order)))


def dense_reference(sae, x: torch.Tensor, dead_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every loss of a KronSAE step written out densely: (N, F) z, a sorted TopK, f @ W_dec."""
    cfg = sae.config
    x_in = x - sae.b_dec if cfg.subtract_b_dec else x
    uv = (x_in @ sae.W_enc + sae.b_enc).reshape(len(x), cfg.num_heads, cfg.m + cfg.n)
    u, v = uv[..., : cfg.m, None], uv[..., None, cfg.m :]
    if cfg.composition == "raw_prod":
        z = u * v
    else:
        s = torch.relu(u) * torch.relu(v)
        z = s if cfg.composition == "relu_prod" else torch.where(s > 0, torch.sqrt(torch.where(s > 0, s, 1) + 1e-5), 0)
    z = z.reshape(len(x), cfg.d_sae)
    f = dense_topk_acts(z, cfg.k)
    x_hat = f @ sae.W_dec + sae.b_dec
    out = {"mse": (x - x_hat).pow(2).sum(-1).mean(), "features": f.detach(), "reconstruction": x_hat}
    if cfg.group_sizes is not None:
        ends = torch.tensor(cfg.group_sizes).cumsum(0).tolist()
        prefix = [(x - (f[:, :e] @ sae.W_dec[:e] + sae.b_dec)).pow(2).sum(-1).mean() for e in ends]
        out["prefix_mse"] = torch.stack(prefix).mean()
    out["auxk"] = x.new_zeros(())
    if dead_mask is not None and dead_mask.any():
        e = (x - x_hat).detach()
        aux = dense_topk_acts(torch.where(dead_mask, z, -torch.inf), min(cfg.resolved_k_aux, int(dead_mask.sum())))
        aux = torch.nan_to_num(aux, neginf=0.0)
        out["auxk"] = (e - aux @ sae.W_dec).pow(2).sum(-1).mean()  # raw, in the MSE units
    weights = cfg.loss_weights()
    out["loss"] = sum(weights[name] * out[name] for name in weights)
    return out


def kron_problem(kind: str, case: str, device: str = "cpu", **overrides):
    """A KronSAE (d 12, h 4, m 2, n 4, F 32, k 5) and input: random, with tied post-latents
    across the top-k boundary, or with fewer than k positive post-latents per token."""
    cfg = dict(d_in=12, d_sae=32, num_heads=4, m=2, n=4, k=5, k_aux=7, composition=kind)
    sae = make(**{**cfg, **overrides})
    torch.manual_seed(3)
    x = torch.randn(24, 12) * 2
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.4)
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.3)
        if case == "ties":  # head 1 copies head 0 and base 1 copies base 0: each score of head 0 comes 4 times
            sae.W_enc[:, 6:12] = sae.W_enc[:, 0:6]
            sae.W_enc[:, 1] = sae.W_enc[:, 0]
            sae.W_enc[:, 7] = sae.W_enc[:, 0]
            sae.b_enc[6:12] = sae.b_enc[0:6]
            sae.b_enc[[0, 1, 6, 7]] = 3.0  # base 0 (x4) dominates, so its tied copies straddle the k boundary
            sae.W_enc[:, 12:] *= 0.1
        if case == "few":  # bases mostly negative, extensions mostly positive: few positive products
            base = torch.tensor([c % 6 < 2 for c in range(24)])
            sae.b_enc[base] = -1.0
            sae.b_enc[~base] = 1.0
            sae.W_enc.mul_(0.2)
    return sae.to(device).train(), x.to(device)


def sparse_step(sae, x, dead_mask, monkeypatch, sparse: bool = True):
    monkeypatch.setenv("HUBSAE_SPARSE_TRAIN", "1" if sparse else "0")
    sae.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = sae(x, dead_mask=dead_mask)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in sae.named_parameters()}, x.grad


def reference_step(sae, x, dead_mask):
    sae.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    ref = dense_reference(sae, x, dead_mask)
    ref["loss"].backward()
    return ref, {name: p.grad.clone() for name, p in sae.named_parameters()}, x.grad


def assert_same_step(sae, x, dead_mask, monkeypatch, sparse: bool = True):
    out, grads, dx = sparse_step(sae, x, dead_mask, monkeypatch, sparse)
    ref, ref_grads, ref_dx = reference_step(sae, x, dead_mask)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.features, ref["features"], **tol)
    torch.testing.assert_close(out.reconstruction, ref["reconstruction"], **tol)
    for name, value in out.losses.items():
        torch.testing.assert_close(value, ref[name], **tol, msg=lambda m, n=name: f"loss {n}: {m}")
    torch.testing.assert_close(out.loss, ref["loss"], **tol)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, **tol, msg=lambda m, n=name: f"grad of {n}: {m}")
    torch.testing.assert_close(dx, ref_dx, **tol)
    return ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["random", "ties", "few"])
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_kron_path_equals_dense_reference(kind, case, device, monkeypatch):
    sae, x = kron_problem(kind, case, device)
    ref = assert_same_step(sae, x, None, monkeypatch)
    active = (ref["features"] > 0).sum(-1)
    if case == "few":
        assert (active < sae.config.k).any() and (active > 0).any()
    if case == "ties":  # a tied value both inside and outside the top k of some token
        z = sae.pre_acts(x).detach()
        kth = ref["features"].topk(sae.config.k, -1).values[:, -1:]
        assert ((z == kth).sum(-1) > (ref["features"] == kth).sum(-1)).any()
    assert_same_step(sae, x, None, monkeypatch, sparse=False)  # the model's own dense path agrees too


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dead", ["few", "half"])
@pytest.mark.parametrize("subtract_b_dec", [False, True])
def test_sparse_kron_auxk_and_b_dec_equal_dense_reference(kind, dead, subtract_b_dec, monkeypatch):
    sae, x = kron_problem(kind, "random", subtract_b_dec=subtract_b_dec)
    gen = torch.Generator().manual_seed(5)
    dead_mask = torch.randperm(32, generator=gen) < 4 if dead == "few" else torch.rand(32, generator=gen) < 0.5
    ref = assert_same_step(sae, x, dead_mask, monkeypatch)
    assert ref["auxk"] > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["random", "ties"])
def test_sparse_kron_matryoshka_groups_equal_dense_reference(kind, case, monkeypatch):
    sae, x = kron_problem(kind, case, group_sizes=[8, 8, 16])
    dead_mask = torch.rand(32, generator=torch.Generator().manual_seed(6)) < 0.3
    ref = assert_same_step(sae, x, dead_mask, monkeypatch)
    assert "prefix_mse" in ref


def test_sparse_kron_path_saves_nothing_dense(monkeypatch):
    """Autograd keeps nothing (N, F)-sized between the forward and the backward of the sparse path."""
    sae, x = kron_problem("mand", "random", group_sizes=[8, 24])
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    monkeypatch.setenv("HUBSAE_SPARSE_TRAIN", "1")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sae(x, dead_mask=torch.rand(32) < 0.5).loss.backward()
    assert shapes and (24, 32) not in shapes, shapes


def test_sparse_kron_path_logs_its_route(caplog, monkeypatch):
    import logging

    from hubsae.ops.kron import announce_kron_path

    announce_kron_path.cache_clear()
    monkeypatch.setenv("HUBSAE_SPARSE_TRAIN", "1")
    with caplog.at_level(logging.INFO, logger="hubsae.ops.kron"):
        make().train()(torch.randn(4, 12))
        make(activation="jumprelu").train()(torch.randn(4, 12))
    assert "sparse Kron path" in caplog.text and "dense path: JumpReLU" in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_head_maxima_select_the_dense_topk_at_scale(kind):
    """Many heads, k > m*n, and ties from zeros: the sparse selection equals a sorted dense TopK."""
    from hubsae.ops.kron import factor_columns, pair_values, select_pairs

    h, m, n, k = 96, 4, 8, 40
    gen = torch.Generator().manual_seed(8)
    uv = torch.randn(50, h * (m + n), generator=gen) - 0.5
    uv[:5] = -1.0  # tokens with no positive ReLU pair at all
    indices = select_pairs(uv, h, m, n, k, kind)
    uv3 = uv.view(50, h, m + n)
    u, v = uv3[..., :m, None], uv3[..., None, m:]
    z = (u * v if kind == "raw_prod" else torch.relu(u) * torch.relu(v)).reshape(50, -1)
    expect = torch.sort(z, dim=-1, descending=True, stable=True).indices[:, :k]
    if kind == "raw_prod":  # raw scores are all distinct: the very same indices
        assert torch.equal(indices.sort(-1).values, expect.sort(-1).values)
    cu, cv = factor_columns(indices, m, n)
    got = pair_values(uv.gather(1, cu), uv.gather(1, cv), "relu_prod" if kind == "mand" else kind, 0.0)
    torch.testing.assert_close(got.sort(-1).values, torch.relu(z.gather(1, expect)).sort(-1).values, rtol=0, atol=0)
