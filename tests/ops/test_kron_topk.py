"""hubsae.ops.kron's exact top-k: the lower position wins ties, like a stable descending sort."""

import pytest
import torch

from hubsae.ops.kron import first_topk, select_pairs


def stable_topk(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(values, dim=-1, descending=True, stable=True).indices[:, :k].sort(-1).values


@pytest.mark.parametrize("n", [40, 700, 2051])  # no blocks; blocks; blocks with a tail
@pytest.mark.parametrize("transposed", [False, True])
def test_first_topk_breaks_ties_towards_the_lower_position(n, transposed):
    gen = torch.Generator().manual_seed(n)
    values = torch.randint(0, 6, (64, n), generator=gen).float() - 3  # many ties, negatives too
    values[:8] = torch.randn(8, n, generator=gen)  # rows without ties
    values[8:12] = 0.0  # every value tied
    k = 20
    if transposed:
        values = values.t().contiguous().t()
    for signed in (True, False):
        v = values if signed else values.clamp_min(0)
        assert torch.equal(first_topk(v, k, signed).sort(-1).values, stable_topk(v, k))


def test_select_pairs_same_for_both_layouts():
    gen = torch.Generator().manual_seed(1)
    uv = torch.randn(30, 64 * 12, generator=gen).round(decimals=1)  # ties among products
    for kind in ("mand", "relu_prod", "raw_prod"):
        row = select_pairs(uv, 64, 4, 8, 24, kind)
        col = select_pairs(uv.t().contiguous().t(), 64, 4, 8, 24, kind)
        assert torch.equal(row, col)
