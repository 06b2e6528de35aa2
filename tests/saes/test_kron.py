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
    # the paper's cost table (papers.md §1.4): F = 32768, (m, n, h) = (4, 4, 2048) halves the encoder
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
    from transformers import LlamaConfig, LlamaForCausalLM

    from hubsae.hooks import record, splice

    llama = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    model = LlamaForCausalLM(llama).eval()
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
