"""The research methods inside the Trainer: OrtSAE orthogonality penalty and PAM-SGD."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from interrupting import Interrupted, interrupt_after

from hubsae import TopKSAE, TopKSAEConfig
from hubsae.train import TrainConfig, Trainer
from hubsae.train.checkpoint import latest_checkpoint
from hubsae.train.orthogonality import orthogonality_penalty


def _nn_cos(sae) -> float:
    w = torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)
    cos = (w @ w.T).fill_diagonal_(-1)
    return float(cos.amax(-1).pow(2).mean())


def test_ortho_term_is_gamma_times_the_penalty_on_a_step_seeded_partition(tiny_config):
    cfg = tiny_config(ortho_coefficient=0.5, ortho_chunks=4, ortho_every=2, seed=3)
    trainer = Trainer(cfg)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))
    trainer.saes = {"h": sae}
    out = sae(torch.randn(16, 32), compute_losses=True)
    base = out.losses["mse"] + sae.config.auxk_coefficient * out.losses["auxk"]
    for step, weight in ((4, 0.5 * 2 * 32), (5, 0.0)):  # gamma * every * d_in: paper units vs our summed MSE
        trainer.step = step
        gen = torch.Generator().manual_seed(3 * 1_000_003 + step * 101)
        expected = base + weight * orthogonality_penalty(sae.W_dec, 4, generator=gen)
        torch.testing.assert_close(trainer._total_loss({"h": out}, 1.0), expected)


def test_ortho_training_lowers_decoder_cosines_and_resumes_bit_identically(tiny_config, tiny_lm, tmp_path):
    model, tok, _, _ = tiny_lm
    common = dict(d_sae=128, max_tokens=64 * 24, ortho_chunks=2, ortho_every=2)
    plain = Trainer(tiny_config(output_dir=str(tmp_path / "plain"), **common), model=model, tokenizer=tok).train()
    cfg = tiny_config(output_dir=str(tmp_path / "ortho"), ortho_coefficient=0.25, **common)
    ortho = Trainer(cfg, model=model, tokenizer=tok).train()
    name = cfg.hookpoints[0]
    assert _nn_cos(ortho[name]) < 0.95 * _nn_cos(plain[name])

    part = tiny_config(output_dir=str(tmp_path / "part"), ortho_coefficient=0.25, checkpoint_every=5, **common)
    with pytest.raises(Interrupted):  # killed after step 7, two steps past its checkpoint
        Trainer(part, model=model, tokenizer=tok).train(on_step=interrupt_after(7))
    assert latest_checkpoint(part.output_dir).name == "step-00000005"
    resumed = Trainer(part, model=model, tokenizer=tok).train(resume=True)
    for k, v in ortho[name].state_dict().items():
        assert torch.equal(resumed[name].state_dict()[k], v), k


def test_pam_sgd_trains_encoder_by_adam_and_decoder_in_closed_form(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(
        method="pam_sgd",
        pam={"mu_enc": 1e-3},
        log_every=1,
        batch_size=256,
        buffer_contexts=32,
        d_sae=64,
        max_tokens=256 * 20,
    )
    trainer = Trainer(cfg, model=model, tokenizer=tok)
    sae = trainer.train()[cfg.hookpoints[0]]
    h = cfg.hookpoints[0]
    assert trainer.history[-1][f"{h}/fvu"] < 0.7 * trainer.history[0][f"{h}/fvu"]
    assert sae.config.normalize_decoder is False and sae.config.subtract_b_dec is False
    norms = sae.W_dec.norm(dim=-1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)  # solved, not renormalized
    assert set(trainer.pams) == {h}


def test_pam_sgd_solves_per_window_and_resumes_mid_window_bit_identically(tiny_config, tiny_lm, tmp_path):
    model, tok, _, _ = tiny_lm
    common = dict(
        method="pam_sgd", pam={"mu_enc": 1e-2, "batches": 4, "validation_every": 2}, d_sae=64, max_tokens=64 * 14
    )
    full = Trainer(tiny_config(output_dir=str(tmp_path / "full"), **common), model=model, tokenizer=tok)
    name = full.config.hookpoints[0]
    decoders = []

    def keep_decoder(trainer):
        decoders.append(trainer.saes[name].W_dec.detach().clone())
        interrupt_after(5)(trainer)

    with pytest.raises(Interrupted):
        full.train(on_step=keep_decoder)
    # the decoder changes only when a window of 4 batches is complete (after steps 4 and 8, ...)
    assert [torch.equal(decoders[i], decoders[i + 1]) for i in range(4)] == [True, True, False, True]
    assert full.pams[name].ridge in full.pams[name].ridge_grid

    uninterrupted = Trainer(tiny_config(output_dir=str(tmp_path / "u"), **common), model=model, tokenizer=tok).train()
    part = tiny_config(output_dir=str(tmp_path / "part"), checkpoint_every=6, **common)
    with pytest.raises(Interrupted):  # checkpoint at step 6: mid-window (2 of 4 batches accumulated)
        Trainer(part, model=model, tokenizer=tok).train(on_step=interrupt_after(7))
    resumed = Trainer(part, model=model, tokenizer=tok).train(resume=True)
    for k, v in uninterrupted[name].state_dict().items():
        assert torch.equal(resumed[name].state_dict()[k], v), k


def test_pam_sgd_bad_settings_are_named(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    with pytest.raises(StrictDataclassError, match=r"pam: unknown key 'mu'.*it takes \['alpha', 'batches'"):
        tiny_config(method="pam_sgd", pam={"mu": 1.0})  # refused when the config is built, before training
    with pytest.raises(ValueError, match="normalize_decoder=True cannot be combined with method='pam_sgd'"):
        cfg = tiny_config(method="pam_sgd", sae={"k": 4, "normalize_decoder": True})
        Trainer(cfg, model=model, tokenizer=tok).train()
    with pytest.raises(StrictDataclassError, match="grad_accum_steps must be 1"):
        TrainConfig(dataset="x", method="pam_sgd", grad_accum_steps=2)
    with pytest.raises(StrictDataclassError, match="method is not 'pam_sgd'"):
        TrainConfig(dataset="x", pam={"mu_enc": 1.0})
