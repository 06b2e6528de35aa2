"""Decoder-geometry metrics on constructed decoders with known answers (OrtSAE, arXiv 2509.22033 §4)."""

import numpy as np
import pytest
import torch

from hubsae.eval.dictionary import (
    composition_rate,
    cross_max_cosine,
    dictionary_metrics,
    mean_cos_sim,
    random_unit_rows,
    unique_feature_curve,
    unique_feature_fraction,
)

D = 128


def _orthonormal(n: int, d: int = D, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, n, generator=g))[0].T


def _composed(n_rows: int = 128, n_atoms: int = 32, per_row: int = 3, seed: int = 0) -> torch.Tensor:
    """Rows that are positive sums of `per_row` of `n_atoms` orthonormal atoms: a dictionary of
    n_rows // 4 = n_atoms directions at k = 4 reconstructs them exactly."""
    g = torch.Generator().manual_seed(seed)
    atoms = _orthonormal(n_atoms, seed=seed + 1)
    rows = []
    for _ in range(n_rows):
        idx = torch.randperm(n_atoms, generator=g)[:per_row]
        rows.append(((torch.rand(per_row, generator=g) + 0.5)[:, None] * atoms[idx]).sum(0))
    return torch.stack(rows)


def test_composed_rows_score_high_and_orthogonal_rows_low():
    fast = dict(steps=300, lr=1e-2)  # CI-sized; the default schedule is longer and gentler
    composed = composition_rate(_composed(64, 16), **fast)
    orthogonal = composition_rate(_orthonormal(64, d=64), **fast)
    assert composed > 0.9
    # 64 orthonormal rows: any 16 directions explain at most 16/64 of their variance
    assert orthogonal < 0.27
    assert composition_rate(_composed(64, 16), width=8, **fast) < composed - 0.1  # too few atoms


def test_composition_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    composition_rate(_orthonormal(16, d=16), steps=5)
    assert torch.equal(torch.rand(3), want)


def test_composition_rejects_a_bad_k():
    with pytest.raises(ValueError, match="k=4, width=2"):
        composition_rate(_orthonormal(8, d=8), steps=1)


def test_cross_max_cosine_against_numpy():
    a, b = torch.randn(50, 16), torch.randn(70, 16)
    an = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True)
    bn = b.numpy() / np.linalg.norm(b.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(cross_max_cosine(a, b, chunk=7).numpy(), (an @ bn.T).max(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(50, 16\) and \(3, 4\)"):
        cross_max_cosine(a, torch.randn(3, 4))


def test_unique_features_identical_rotated_and_scaled():
    W = torch.randn(64, D)
    assert unique_feature_fraction(W, W) == 0.0
    perm = W[torch.randperm(64)] * 3.0  # the same directions, reordered and rescaled
    assert unique_feature_fraction(W, perm) == 0.0
    rotated = W @ _orthonormal(D, seed=3)  # a random rotation: no row keeps its direction
    assert unique_feature_fraction(W, rotated, threshold=0.4) > 0.95
    curve = unique_feature_curve(W, rotated)
    values = list(curve.values())
    assert values == sorted(values)  # a higher threshold can only leave more latents unmatched
    best = cross_max_cosine(W, rotated).numpy()
    assert curve[0.2] == pytest.approx(float((best < 0.2).mean()))


def test_random_rows_are_spread():
    W = random_unit_rows(200, 64, seed=1)
    assert torch.allclose(W.norm(dim=-1), torch.ones(200))
    assert not torch.equal(W, random_unit_rows(200, 64, seed=2))
    assert torch.equal(W, random_unit_rows(200, 64, seed=1))
    Wn = W.numpy()
    cos = Wn @ Wn.T
    np.fill_diagonal(cos, -np.inf)
    assert mean_cos_sim(W) == pytest.approx(float(cos.max(1).mean()), rel=1e-5)


def test_dictionary_metrics_reports_controls():
    W = _composed(64, 16)
    out = dictionary_metrics(W, {"copy": W.flip(0)}, composition_steps=150, progress=False)
    assert out["composition"] > out["composition_random"]
    assert out["mean_cos_sim"] > out["mean_cos_sim_random"]
    copy = out["unique_features"]["copy"]
    assert copy["unique_at_0.2"] == 0.0 and set(copy["curve"].values()) == {0.0}
    assert copy["unique_at_0.2_random"] > 0.5  # random rows in d = 128 rarely reach cosine 0.2
    assert "unique_features" not in dictionary_metrics(W, composition_steps=1, progress=False)


def test_an_untrained_decoder_scores_like_its_random_control():
    # regression: the meta-SAE's init once drew the control's own first rows (same seed, same randn)
    torch.manual_seed(10)
    untrained = torch.randn(128, 64)
    out = dictionary_metrics(untrained, seed=0, composition_steps=60, progress=False)
    assert out["composition"] == pytest.approx(out["composition_random"], abs=0.05)
    assert out["mean_cos_sim"] == pytest.approx(out["mean_cos_sim_random"], abs=0.03)
