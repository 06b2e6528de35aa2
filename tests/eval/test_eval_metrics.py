import math

import pytest
import torch

from hubsae.eval.metrics import (
    ReconstructionMetrics,
    decoder_max_cosine,
    density_histogram,
    fraction_recovered,
    kl_score,
    token_cross_entropy,
    token_kl,
)


def _metrics(x, x_hat, f):
    m = ReconstructionMetrics(x.shape[-1], f.shape[-1])
    m.update(x, x_hat, f)
    return m.compute()


def test_perfect_reconstruction_has_zero_fvu():
    x = torch.randn(64, 8)
    out = _metrics(x, x.clone(), torch.rand(64, 16))
    for key in ("fvu", "fvu_legacy", "fvu_dimvar", "mse"):
        assert out[key] == pytest.approx(0.0, abs=1e-12), key
    assert out["cosine_similarity"] == pytest.approx(1.0)
    assert out["l2_ratio"] == pytest.approx(1.0)


def test_mean_predictor_has_unit_fvu():
    x = torch.randn(64, 8) + 3.0
    x_hat = x.mean(0, keepdim=True).expand_as(x)
    out = _metrics(x, x_hat, torch.zeros(64, 16))
    for key in ("fvu", "fvu_legacy", "fvu_dimvar"):
        assert out[key] == pytest.approx(1.0, abs=1e-9), key


def test_hand_computed_values_and_variant_difference():
    # x = (1,0),(3,0); x_hat = (1,1),(3,1): every error is the constant offset (0,-1).
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 1.0]])
    f = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, -3.0]])
    out = _metrics(x, x_hat, f)
    assert out["mse"] == pytest.approx(1.0)  # ‖err‖² = 1 per token
    assert out["mse_per_element"] == pytest.approx(0.5)
    assert out["fvu"] == pytest.approx(1.0)  # E‖x − E x‖² = 1
    assert out["fvu_legacy"] == pytest.approx(1.0)  # each token: 1 / 1
    assert out["fvu_dimvar"] == pytest.approx(0.0)  # Var(err) = 0: blind to the offset
    assert out["l0"] == pytest.approx(1.5)
    assert out["l1"] == pytest.approx(3.0)
    # cos((1,0),(1,1)) = 1/√2, cos((3,0),(3,1)) = 3/√10
    assert out["cosine_similarity"] == pytest.approx((1 / math.sqrt(2) + 3 / math.sqrt(10)) / 2)
    assert out["dead_fraction"] == pytest.approx(0.0)
    assert out["dense_fraction"] == pytest.approx(1.0)  # each latent fires on 50% > 10%


def test_streaming_equals_one_batch_for_pooled_variants():
    x, x_hat, f = torch.randn(100, 6), torch.randn(100, 6), torch.relu(torch.randn(100, 10))
    whole = _metrics(x, x_hat, f)
    m = ReconstructionMetrics(6, 10)
    for i in range(0, 100, 30):
        m.update(x[i : i + 30], x_hat[i : i + 30], f[i : i + 30])
    parts = m.compute()
    for key in ("mse", "fvu", "fvu_dimvar", "l0", "l1", "cosine_similarity", "dead_fraction"):
        assert parts[key] == pytest.approx(whole[key], rel=1e-10), key
    assert torch.equal(m.fire_count, (f != 0).sum(0))


def test_dead_and_dense_latents_and_density():
    f = torch.zeros(100, 4)
    f[:50, 0] = 1.0  # 50%: dense
    f[:5, 1] = 2.0  # 5%: neither
    f[0, 2] = 4.0  # 1%
    m = ReconstructionMetrics(3, 4)
    m.update(torch.randn(100, 3), torch.randn(100, 3), f)
    out = m.compute()
    assert out["dead_fraction"] == pytest.approx(0.25)
    assert out["dense_fraction"] == pytest.approx(0.25)
    assert m.density().tolist() == pytest.approx([0.5, 0.05, 0.01, 0.0])
    assert m.mean_activation().tolist() == pytest.approx([1.0, 2.0, 4.0, 0.0])
    hist = density_histogram(m.density(), bins=8, low=-4.0)
    assert hist["dead"] == 1 and sum(hist["counts"]) == 3
    # log10 densities -0.30, -1.30, -2: bins of width 0.5 on [-4, 0]
    assert [i for i, c in enumerate(hist["counts"]) if c] == [4, 5, 7]


def test_bad_shapes_are_named():
    m = ReconstructionMetrics(4, 8)
    with pytest.raises(ValueError, match="x_hat"):
        m.update(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="features"):
        m.update(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 7))
    with pytest.raises(ValueError, match="no tokens"):
        m.compute()


def test_decoder_max_cosine_against_brute_force():
    W = torch.randn(37, 5)
    unit = W / W.norm(dim=-1, keepdim=True)
    cos = unit @ unit.T
    cos.fill_diagonal_(-2.0)
    expected = cos.max(-1).values
    assert torch.allclose(decoder_max_cosine(W, chunk=8), expected, atol=1e-6)
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert decoder_max_cosine(same).tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_cross_entropy_and_kl_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 1, 2]])
    total, count = token_cross_entropy(logits, ids)
    assert int(count) == 2
    assert float(total) == pytest.approx(-math.log(0.25) - math.log(0.1))
    mask = torch.tensor([[1, 1, 0]])
    total, count = token_cross_entropy(logits, ids, mask)
    assert int(count) == 1 and float(total) == pytest.approx(-math.log(0.25))
    p = torch.tensor([0.5, 0.25, 0.25])
    q = torch.tensor([0.25, 0.25, 0.5])
    kl, n = token_kl(p.log().view(1, 1, 3), q.log().view(1, 1, 3))
    assert int(n) == 1 and float(kl) == pytest.approx(float((p * (p / q).log()).sum()))
    kl_same, _ = token_kl(logits, logits)
    assert float(kl_same) == pytest.approx(0.0, abs=1e-12)


def test_fraction_recovered_endpoints():
    assert fraction_recovered(clean=2.0, spliced=2.0, ablated=7.0) == pytest.approx(1.0)
    assert fraction_recovered(clean=2.0, spliced=7.0, ablated=7.0) == pytest.approx(0.0)
    assert fraction_recovered(clean=2.0, spliced=3.0, ablated=7.0) == pytest.approx(0.8)
    assert kl_score(kl_spliced=0.0, kl_ablated=3.0) == pytest.approx(1.0)
    assert kl_score(kl_spliced=3.0, kl_ablated=3.0) == pytest.approx(0.0)
    assert math.isnan(fraction_recovered(1.0, 1.0, 1.0))
