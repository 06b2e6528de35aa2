"""forward(..., dense_features=False): a sparse path returns its code instead of (N, d_sae) features,
with the same reconstruction, losses, gradients, fired latents and L0 as the dense output."""

import pytest
import torch

from hubsae import KronSAE, KronSAEConfig, TopKSAE, TopKSAEConfig


@pytest.mark.parametrize(
    "make",
    [
        lambda: KronSAE(KronSAEConfig(d_in=16, d_sae=64, k=4, num_heads=8, m=2, n=4)),
        lambda: TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=4)),
    ],
)
def test_sparse_output_matches_the_dense_one(make):
    torch.manual_seed(0)
    sae = make().train()
    x = torch.randn(2, 12, 16)
    dead = torch.rand(64) < 0.5
    dense = sae(x, dead_mask=dead)
    dense.loss.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    sparse = sae(x, dead_mask=dead, dense_features=False)
    sparse.loss.backward()
    for n, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)
    torch.testing.assert_close(sparse.reconstruction, dense.reconstruction)
    torch.testing.assert_close(sparse.loss, dense.loss)
    assert torch.equal(sparse.active_latents(64), (dense.features != 0).reshape(-1, 64).any(0))
    assert int(sparse.active_count()) == int((dense.features != 0).sum())
    if sparse.code is not None:  # KronSAE: no (N, F) tensor at all
        assert sparse.features is None
        assert torch.equal(sparse.code.to_dense(64), dense.features)
