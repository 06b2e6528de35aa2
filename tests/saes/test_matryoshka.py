"""Matryoshka SAE: nested prefix losses, default groups, BatchTopK and per-token TopK modes."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

import hubsae
from hubsae.saes.sparse import prefix_mse_losses


def make(**kw):
    cfg = dict(d_in=8, d_sae=32, k=3, group_sizes=[4, 12, 16])
    cfg.update(kw)
    return hubsae.MatryoshkaSAE(hubsae.MatryoshkaSAEConfig(**cfg))


def test_prefix_losses_match_explicit_truncated_decoders():
    x, f = torch.randn(10, 8), torch.relu(torch.randn(10, 32))
    W, b = torch.randn(32, 8), torch.randn(8)
    got = prefix_mse_losses(x, f, W, b, [4, 12, 16])
    for g, prefix in enumerate([4, 16, 32]):
        truncated = f.clone()
        truncated[:, prefix:] = 0  # only the first `prefix` latents reconstruct
        expect = (x - (truncated @ W + b)).pow(2).sum(-1).mean()
        torch.testing.assert_close(got[g], expect)


def test_losses_mean_over_groups_plus_auxk():
    sae = make().train()
    x = torch.randn(16, 8)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[20:] = True
    out = sae(x, dead_mask=dead)
    prefix = prefix_mse_losses(x, out.features, sae.W_dec, sae.b_dec, [4, 12, 16])
    torch.testing.assert_close(out.losses["prefix_mse"], prefix.mean())
    torch.testing.assert_close(out.losses["mse"], prefix[-1])  # the full dictionary is the last prefix
    assert out.losses["auxk"] > 0
    torch.testing.assert_close(out.loss, prefix.mean() + out.losses["auxk"] / 32)


def test_custom_group_weights_sum_like_kronsae_eq6():
    sae = make(group_weights=[1.0, 1.0, 1.0]).train()
    x = torch.randn(16, 8)
    out = sae(x)
    prefix = prefix_mse_losses(x, out.features, sae.W_dec, sae.b_dec, [4, 12, 16])
    torch.testing.assert_close(out.losses["prefix_mse"], prefix.sum())


def test_default_groups_are_the_official_release_split():
    cfg = hubsae.MatryoshkaSAEConfig(d_in=8, d_sae=64, k=3)
    assert cfg.resolved_group_sizes == [4, 4, 8, 16, 32]


def test_batch_topk_and_per_token_topk_modes():
    x = torch.randn(10, 8)
    batch = make().train()
    token = make(batch_topk=False).train()
    with torch.no_grad():
        for sae in (batch, token):
            sae.b_enc.fill_(5.0)
    assert int((batch(x).features != 0).sum()) == 30
    assert ((token(x).features != 0).sum(-1) == 3).all()
    assert ((token.eval().encode(x) != 0).sum(-1) == 3).all()


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"group_sizes": [4, 12]}, "sum to 16, not d_sae=32"),
        ({"group_sizes": [0, 32]}, "positive sizes"),
        ({"group_weights": [1.0]}, "3 non-negative"),
        ({"group_sizes": None, "d_sae": 40}, "divisible by 16"),
    ],
)
def test_bad_groups_raise(kw, match):
    with pytest.raises(StrictDataclassClassValidationError, match=match):
        hubsae.MatryoshkaSAEConfig(**{**dict(d_in=8, d_sae=32, k=3, group_sizes=[4, 12, 16]), **kw})


def test_first_group_alone_reconstructs_better_than_plain_batchtopk_prefix():
    """The point of the nested loss: a short prefix of the dictionary is a usable SAE by itself."""
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(32, 8, generator=g), dim=-1)
    freq = torch.linspace(3, 0.1, 32)  # a few frequent atoms, many rare ones
    codes = (torch.rand(1024, 32, generator=g) < freq / 32).float()
    data = codes @ atoms
    first_group = {}
    for name, sae in {
        "matryoshka": make(),
        "batchtopk": hubsae.BatchTopKSAE(hubsae.BatchTopKSAEConfig(d_in=8, d_sae=32, k=3)),
    }.items():
        torch.manual_seed(0)
        opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
        sae.train()
        for step in range(150):
            loss = sae(data[(step * 128) % 1024 :][:128]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sae.set_decoder_norm_to_unit_norm()
        with torch.no_grad():
            f = sae.eval().encode(data)
            first_group[name] = prefix_mse_losses(data, f, sae.W_dec, sae.b_dec, [4, 28])[0].item()
    assert first_group["matryoshka"] < first_group["batchtopk"], first_group
