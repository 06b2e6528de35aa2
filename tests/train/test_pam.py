"""PAM-SGD: the closed-form decoder step against torch.linalg.lstsq on the same objective."""

import math

import pytest
import torch

import hubsae
from hubsae.train.pam import PAMSGD, DecoderStatistics, DecoderWindow, decoder_closed_form


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


# ---- the Trainer's schedule: one solve per window of batches, ridge chosen on held-out batches -----


def test_squared_error_from_the_sums_equals_the_direct_one():
    z = torch.relu(torch.randn(50, 6, dtype=torch.float64))
    x = torch.randn(50, 4, dtype=torch.float64)
    W, b = torch.randn(6, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    stats = DecoderStatistics(6, 4)
    stats.update(z[:20], x[:20])
    stats.update(z[20:], x[20:])
    assert stats.squared_error(W, b) == pytest.approx(float((x - z @ W - b).pow(2).sum()), rel=1e-10)


def test_window_solves_once_over_its_batches_and_keeps_silent_latents():
    sae = _topk_sae().train()
    with torch.no_grad():
        sae.b_enc[5] = -100.0  # latent 5 never fires
    window = DecoderWindow(PAMSGD(sae, n_total=96), batches=3, validation_every=0, prox=1e-2)
    batches = torch.randn(96, 8).split(32)
    W_t, b_t = sae.W_dec.detach().clone(), sae.b_dec.detach().clone()
    z = torch.cat([sae(x).features.detach() for x in batches]).double()
    x_all = torch.cat(batches).double()
    for i, x in enumerate(batches):
        window.observe(x)
        if i < 2:  # nothing solved before the window is full
            assert torch.equal(sae.W_dec, W_t)
    scale = float((z * z).sum(0).mean())
    W_ref, b_ref = decoder_closed_form(z, x_all, W_t.double(), b_t.double(), mu=1e-2 * scale)
    torch.testing.assert_close(sae.W_dec.data, W_ref.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sae.b_dec.data, b_ref.float(), rtol=1e-4, atol=1e-5)
    silent = (z == 0).all(0)
    assert silent.any(), "the test needs a latent that never fires in the window"
    rows = sae.W_dec[silent]  # kept along their previous direction, not zeroed (as a per-batch solve did)
    cos = torch.nn.functional.cosine_similarity(rows, W_t[silent], dim=-1)
    assert (rows.norm(dim=-1) > 0.5).all() and (cos > 0.999).all()


def test_window_chooses_the_ridge_on_held_out_batches():
    """Few vectors for many latents: the unregularized solve interpolates, the held-out batch says so."""
    g = torch.Generator().manual_seed(0)
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=64, k=16, normalize_decoder=False)).train()
    window = DecoderWindow(PAMSGD(sae, n_total=64), batches=4, validation_every=4, prox=0.0)
    batches = (torch.randn(64, 8, generator=g) * 2).split(16)
    W_t, b_t = sae.W_dec.detach().clone(), sae.b_dec.detach().clone()
    held, fit = DecoderStatistics(64, 8), DecoderStatistics(64, 8)
    for i, x in enumerate(batches):  # the codes the window sees, computed before it solves
        (held if i == 3 else fit).update(window.pam.codes(x)[1], x)
    for x in batches:
        window.observe(x)
    assert window.ridge > 0
    scale = float(fit.S_zz.diagonal().mean())
    err = {r: held.squared_error(*fit.solve(W_t, b_t, alpha=r * scale, tol=1e-8)) for r in window.ridge_grid}
    assert err[window.ridge] == min(err.values()) < err[0.0]


def test_encoder_anchors_move_only_at_a_solve():
    sae = _topk_sae().train()
    window = DecoderWindow(PAMSGD(sae, n_total=64, mu_enc=1.0), batches=2, validation_every=0)
    opt = torch.optim.Adam(window.encoder_parameters(), lr=1e-2)
    x = torch.randn(32, 8)
    for step in range(3):
        loss = sae(x).loss + window.proximal_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.observe(x)
        if step == 0:  # mid-window: the term pulls the encoder back towards the last anchor
            assert window.proximal_loss().item() > 0
        if step == 1:  # the window was solved: the anchors are the current encoder
            assert window.proximal_loss().item() == 0


def test_window_state_round_trips():
    sae = _topk_sae().train()
    window = DecoderWindow(PAMSGD(sae, n_total=64), batches=4, validation_every=2)
    for x in torch.randn(96, 8).split(32):
        window.observe(x)
    state = window.state_dict()
    other = DecoderWindow(PAMSGD(_topk_sae().train(), n_total=64), batches=4, validation_every=2)
    other.load_state_dict(state)
    assert other.seen == 3 and other.fit.count == window.fit.count and other.held_out.count == 32
    assert torch.equal(other.fit.S_zz, window.fit.S_zz)
    assert all(torch.equal(other.pam.anchors[k], v) for k, v in window.pam.anchors.items())
    with pytest.raises(ValueError, match="validation_every 0 \\(off\\) or >= 2"):
        DecoderWindow(PAMSGD(sae, n_total=64), validation_every=1)
