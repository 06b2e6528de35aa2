"""Block-maxima top-k selection against torch.topk."""

import pytest
import torch

from hubsae.ops import topk_flat, topk_rows
from hubsae.ops.select import BLOCK


@pytest.mark.parametrize("n", [4 * BLOCK * 4, 1000, 4611, 20000])
@pytest.mark.parametrize("k", [1, 4, 32])
def test_topk_rows_same_values_and_consistent_indices(n, k):
    x = torch.randn(17, n, generator=torch.Generator().manual_seed(n + k))
    values, indices = topk_rows(x, k)
    expected = x.topk(k, dim=-1).values
    torch.testing.assert_close(values.sort(-1, descending=True).values, expected, rtol=0, atol=0)
    torch.testing.assert_close(x.gather(1, indices), values, rtol=0, atol=0)
    assert (indices.sort(-1).values.diff(dim=-1) > 0).all()  # distinct latents per row


def test_topk_rows_with_ties_and_signs():
    """Small integers give many ties: the kept values must still be the k largest."""
    x = torch.randint(-3, 4, (9, 3000), generator=torch.Generator().manual_seed(0)).float()
    x[0] = -5.0  # a row of equal values
    values, indices = topk_rows(x, 40)
    torch.testing.assert_close(values.sort(-1, descending=True).values, x.topk(40, dim=-1).values)
    torch.testing.assert_close(x.gather(1, indices), values)
    assert (indices.sort(-1).values.diff(dim=-1) > 0).all()


def test_topk_flat_large_k():
    x = torch.randn(200_003, generator=torch.Generator().manual_seed(5))
    values, indices = topk_flat(x, 6000)
    torch.testing.assert_close(values.sort(descending=True).values, x.topk(6000).values, rtol=0, atol=0)
    torch.testing.assert_close(x[indices], values, rtol=0, atol=0)
    assert indices.unique().numel() == 6000
