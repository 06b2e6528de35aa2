import pytest
import torch
from torch import nn

from hubsae.eval.stats import logit_effects, unembedding


def test_logit_effects_equal_full_product():
    W_dec, W_U = torch.randn(37, 6), torch.randn(50, 6)
    eff = logit_effects(W_dec, W_U, n=5, bins=7, chunk=8)
    full = W_dec @ W_U.T
    order = full.argsort(dim=-1, descending=True)
    assert torch.equal(eff.pos_ids, order[:, :5])
    assert torch.equal(eff.neg_ids, order.flip(-1)[:, :5])
    assert torch.allclose(eff.pos_values, full.gather(1, order[:, :5]), atol=1e-5)
    assert torch.equal(eff.hist_counts.sum(-1), torch.full((37,), 50))
    assert torch.allclose(eff.hist_edges[:, 0], full.min(-1).values, atol=1e-5)
    assert torch.allclose(eff.hist_edges[:, -1], full.max(-1).values, atol=1e-5)
    # the bin of each row's maximum is the last one, of its minimum the first
    assert (eff.hist_counts[:, 0] >= 1).all() and (eff.hist_counts[:, -1] >= 1).all()


def test_logit_effects_errors():
    with pytest.raises(ValueError, match="residual stream"):
        logit_effects(torch.randn(4, 6), torch.randn(10, 5))
    with pytest.raises(ValueError, match="no output embedding"):
        unembedding(nn.Linear(2, 2))
