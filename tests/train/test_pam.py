"""PAM-SGD: the closed-form decoder step against torch.linalg.lstsq on the same objective."""

import math

import pytest
import torch

import hubsae
from hubsae.train.pam import PAMSGD, DecoderStatistics, decoder_closed_form


def lstsq_reference(z, x, W_t, b_t, n, alpha, beta, mu, nu):
    """Stack the objective's terms as rows of one least-squares problem in theta = [W; b]."""
    B, F = z.shape
    D = x.shape[1]
    s = math.sqrt(n / B)
    eye_w = torch.cat([torch.eye(F), torch.zeros(F, 1)], 1).double()
    e_b = torch.cat([torch.zeros(1, F), torch.ones(1, 1)], 1).double()
    rows = [s * torch.cat([z, torch.ones(B, 1, dtype=z.dtype)], 1), math.sqrt(alpha) * eye_w]
    rows += [math.sqrt(mu) * eye_w, math.sqrt(beta) * e_b, math.sqrt(nu) * e_b]
    targets = [s * x, torch.zeros(F, D, dtype=x.dtype), math.sqrt(mu) * W_t]
    targets += [torch.zeros(1, D, dtype=x.dtype), math.sqrt(nu) * b_t[None]]
    theta = torch.linalg.lstsq(torch.cat(rows), torch.cat(targets), driver="gelsd").solution
    return theta[:F], theta[F]


@pytest.mark.parametrize(
    "n,alpha,beta,mu,nu",
    [(None, 0.0, 0.0, 0.0, 0.0), (1000, 0.0, 0.0, 0.3, 0.7), (500, 0.1, 0.2, 1.0, 2.0), (40, 1e-3, 0.0, 0.0, 5.0)],
)
def test_closed_form_equals_lstsq(n, alpha, beta, mu, nu):
    g = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(40, 6, generator=g, dtype=torch.float64))
    x = torch.randn(40, 5, generator=g, dtype=torch.float64) + 3.0
    W_t = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b_t = torch.randn(5, generator=g, dtype=torch.float64)
    W, b = decoder_closed_form(z, x, W_t, b_t, n, alpha, beta, mu, nu, tol=0.0)
    W_ref, b_ref = lstsq_reference(z, x, W_t, b_t, n or 40, alpha, beta, mu, nu)
    torch.testing.assert_close(W, W_ref, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(b, b_ref, rtol=1e-8, atol=1e-9)


def test_closed_form_is_a_minimum_of_the_objective():
    z = torch.relu(torch.randn(64, 8, dtype=torch.float64))
    x = torch.randn(64, 4, dtype=torch.float64)
    W_t, b_t = torch.randn(8, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    W, b = decoder_closed_form(z, x, W_t, b_t, 128, 0.1, 0.1, 0.5, 0.5, tol=0.0)

    def objective(W, b):
        fit = 2.0 * (x - z @ W - b).pow(2).sum()
        return (
            fit
            + 0.1 * W.pow(2).sum()
            + 0.1 * b.pow(2).sum()
            + 0.5 * (W - W_t).pow(2).sum()
            + 0.5 * (b - b_t).pow(2).sum()
        )

    W.requires_grad_(True)
    b.requires_grad_(True)
    gW, gb = torch.autograd.grad(objective(W, b), (W, b))
    assert gW.abs().max() < 1e-8 and gb.abs().max() < 1e-8


def test_dead_latents_without_ridge_fall_back_and_stay_finite():
    z = torch.relu(torch.randn(20, 5))
    z[:, 2] = 0.0  # a dead latent: A is singular without jitter
    W, b = decoder_closed_form(z, torch.randn(20, 3), torch.randn(5, 3), torch.zeros(3), tol=0.0)
    assert torch.isfinite(W).all() and torch.isfinite(b).all() and W.dtype == torch.float32


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 2\)"):
        decoder_closed_form(torch.zeros(4, 3), torch.zeros(5, 2), torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="decoder shapes"):
        decoder_closed_form(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(2, 3), torch.zeros(2))


def _topk_sae(**kw):
    cfg = hubsae.TopKSAEConfig(d_in=8, d_sae=32, k=4, normalize_decoder=False, **kw)
    return hubsae.TopKSAE(cfg)


def test_decoder_step_writes_the_solution_for_the_sae_codes():
    sae = _topk_sae(input_norm="scale", input_scale=2.0).train()
    pam = PAMSGD(sae, n_total=256, mu_dec=0.1, nu_dec=0.1)
    x = torch.randn(64, 8)
    W_t, b_t = sae.W_dec.detach().clone(), sae.b_dec.detach().clone()
    z = sae(x).features.detach()  # codes on the normalized input, with the old b_dec subtracted
    W_ref, b_ref = decoder_closed_form(z, 2.0 * x, W_t, b_t, 256, mu=0.1, nu=0.1)
    pam.decoder_step(x)
    torch.testing.assert_close(sae.W_dec.data, W_ref)
    torch.testing.assert_close(sae.b_dec.data, b_ref)


def test_encoder_parameters_and_proximal_loss():
    sae = _topk_sae()
    pam = PAMSGD(sae, n_total=100, mu_enc=0.5, nu_enc=2.0)
    assert {id(p) for p in pam.encoder_parameters()} == {id(sae.W_enc), id(sae.b_enc)}
    assert pam.proximal_loss().item() == 0.0
    with torch.no_grad():
        sae.W_enc.add_(0.1)
        sae.b_enc.sub_(0.2)
        sae.W_dec.add_(5.0)  # the decoder is not under the encoder's proximal term
    expected = 0.5 * (0.1**2) * sae.W_enc.numel() + 2.0 * (0.2**2) * 32
    assert pam.proximal_loss().item() == pytest.approx(expected, rel=1e-4)
    pam.snapshot()
    assert pam.proximal_loss().item() == 0.0


def test_pam_training_reconstructs_synthetic_dictionary():
    g = torch.Generator().manual_seed(1)
    atoms = torch.nn.functional.normalize(torch.randn(32, 8, generator=g), dim=-1)
    codes = torch.zeros(1024, 32).scatter_(1, torch.randint(0, 32, (1024, 3), generator=g), 1.0)
    data = codes @ atoms
    sae = _topk_sae().train()
    pam = PAMSGD(sae, n_total=len(data))
    opt = torch.optim.Adam(pam.encoder_parameters(), lr=3e-3)
    first = sae(data, compute_losses=True).losses["mse"].item()
    for step in range(150):
        batch = data[(step * 128) % 1024 :][:128]
        pam.decoder_step(batch)
        loss = sae(batch).loss + pam.proximal_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pam.snapshot()
    final = sae(data, compute_losses=True).losses["mse"].item()
    assert final < 0.3 * first, (first, final)


def test_pam_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_total"):
        PAMSGD(_topk_sae(), n_total=0)


def test_statistics_accumulated_over_batches_equal_one_solve_on_their_union():
    z = torch.relu(torch.randn(90, 6, dtype=torch.float64))
    x = torch.randn(90, 4, dtype=torch.float64)
    W_t, b_t = torch.randn(6, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    stats = DecoderStatistics(6, 4)
    for start in (0, 30, 60):
        stats.update(z[start : start + 30], x[start : start + 30])
    W, b = stats.solve(W_t, b_t, 500, alpha=0.1, mu=0.5, nu=0.2)
    W_ref, b_ref = lstsq_reference(z, x, W_t, b_t, 500, 0.1, 0.0, 0.5, 0.2)
    torch.testing.assert_close(W, W_ref, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(b, b_ref, rtol=1e-7, atol=1e-8)
    with pytest.raises(ValueError, match="no batches"):
        DecoderStatistics(6, 4).solve(W_t, b_t)


def test_decoder_step_from_an_epoch_of_batches():
    sae = _topk_sae().train()
    pam = PAMSGD(sae, n_total=96)
    x = torch.randn(96, 8)
    z = sae(x).features.detach()
    W_ref, b_ref = decoder_closed_form(z, x, sae.W_dec.detach().clone(), sae.b_dec.detach().clone(), 96)
    pam.decoder_step_from(x.split(32))
    torch.testing.assert_close(sae.W_dec.data, W_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sae.b_dec.data, b_ref, rtol=1e-5, atol=1e-6)
