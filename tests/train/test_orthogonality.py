"""OrtSAE's chunked orthogonality penalty against a brute-force computation."""

import itertools
import math

import pytest
import torch

from hubsae.train.orthogonality import OrthogonalityPenalty, num_chunks_for, orthogonality_penalty


def brute_force(W: torch.Tensor, chunks: list[list[int]], delta: float = 1e-8) -> float:
    """Python loops over all pairs of each chunk, straight from the paper's formula."""
    total = 0.0
    for chunk in chunks:
        acc = 0.0
        for i in chunk:
            best = -math.inf
            for j in chunk:
                if j != i:
                    cos = float(W[i] @ W[j]) / max(float(W[i].norm() * W[j].norm()), delta)
                    best = max(best, cos)
            acc += best**2
        total += acc / len(chunk)
    return total / len(chunks)


@pytest.mark.parametrize("d_sae,num_chunks", [(12, 1), (12, 3), (13, 4), (10, 5)])
def test_penalty_matches_brute_force_on_same_partition(d_sae, num_chunks):
    W = torch.randn(d_sae, 5, dtype=torch.float64) * torch.rand(d_sae, 1, dtype=torch.float64)
    got = orthogonality_penalty(W, num_chunks, generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(d_sae, generator=torch.Generator().manual_seed(3))
    chunks = [c.tolist() for c in torch.tensor_split(perm, num_chunks)]
    assert sorted(itertools.chain(*chunks)) == list(range(d_sae))  # a partition
    assert got.item() == pytest.approx(brute_force(W, chunks), rel=1e-10)


def test_one_chunk_is_mean_squared_nearest_neighbour_cosine_over_all_pairs():
    W = torch.randn(9, 4, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(W[:, None], W[None], dim=-1)
    cos.fill_diagonal_(-2.0)
    expected = cos.max(-1).values.pow(2).mean()
    torch.testing.assert_close(orthogonality_penalty(W, 1), expected)


def test_signed_max_ignores_antiparallel_and_orthogonal_rows_cost_nothing():
    eye = torch.eye(6)
    assert orthogonality_penalty(eye, 1).item() == 0.0
    assert orthogonality_penalty(torch.cat([eye[:3], -eye[:3]]), 1).item() == 0.0  # cos -1 is not penalized
    assert orthogonality_penalty(torch.cat([eye[:3], 2 * eye[:3]]), 1).item() == pytest.approx(1.0)


def test_gradient_reduces_the_penalty_and_is_scale_free():
    W = torch.randn(32, 8, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    loss = orthogonality_penalty(W, 4, generator=g)
    loss.backward()
    with torch.no_grad():
        after = orthogonality_penalty(W - 0.05 * W.grad, 4, generator=torch.Generator().manual_seed(0))
        scaled = orthogonality_penalty(3 * W, 4, generator=torch.Generator().manual_seed(0))
    assert after < loss
    torch.testing.assert_close(scaled, loss.detach())
    radial = (W.grad * W).sum(-1)  # cos is scale invariant: the gradient is orthogonal to each row
    torch.testing.assert_close(radial, torch.zeros(32), atol=1e-6, rtol=0)


def test_bf16_decoder_is_computed_in_fp32():
    W = torch.randn(16, 8)
    ref = orthogonality_penalty(W.bfloat16().float(), 2, generator=torch.Generator().manual_seed(1))
    got = orthogonality_penalty(W.bfloat16(), 2, generator=torch.Generator().manual_seed(1))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref)


def test_cost_is_linear_in_dictionary_size_for_fixed_chunk_size():
    """Count the Gram-matrix FLOPs through torch's flop counter: F * chunk * d, not F^2 * d."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(d_sae):
        with FlopCounterMode(display=False) as counter:
            orthogonality_penalty(torch.randn(d_sae, 8), num_chunks_for(d_sae, chunk_size=64))
        return counter.get_total_flops()

    assert flops(512) == 2 * flops(256) == 2 * 2 * 256 * 64 * 8


def test_num_chunks_and_every_n_schedule():
    assert num_chunks_for(65536) == 8 and num_chunks_for(100) == 1 and num_chunks_for(8193) == 2
    pen = OrthogonalityPenalty(gamma=0.25, every=5, num_chunks=2)
    assert [pen.coefficient(s) for s in range(6)] == [1.25, 0, 0, 0, 0, 1.25]
    W = torch.randn(10, 4)
    assert pen(W, step=3) is None
    torch.testing.assert_close(  # gamma * every * d_in: gamma is per MSE element, as in the paper
        pen(W, step=10, generator=torch.Generator().manual_seed(2)),
        1.25 * 4 * orthogonality_penalty(W, 2, generator=torch.Generator().manual_seed(2)),
    )
    assert OrthogonalityPenalty(chunk_size=4).chunks_for(10) == 3


@pytest.mark.parametrize(
    "kwargs,match", [({"gamma": -1}, "gamma"), ({"every": 0}, "every"), ({"num_chunks": 0}, "num_chunks")]
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OrthogonalityPenalty(**kwargs)


def test_too_many_chunks_raise():
    with pytest.raises(ValueError, match="num_chunks=6 must be between 1 and d_sae // 2 = 5"):
        orthogonality_penalty(torch.randn(10, 3), 6)
