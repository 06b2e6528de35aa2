import json
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from interrupting import Interrupted, interrupt_after

from hubsae import AutoSAE, ReLUSAE, ReLUSAEConfig
from hubsae.data import write_cache
from hubsae.data.stream import tensor_blocks
from hubsae.eval.plots import have_matplotlib
from hubsae.train import NonFiniteLossError, Trainer
from hubsae.train.checkpoint import latest_checkpoint
from hubsae.train.metrics import DeadLatentTracker


def _weights(saes):
    return {f"{h}/{k}": v.detach().clone() for h, sae in saes.items() for k, v in sae.state_dict().items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_lowers_fvu_and_saves_loadable_saes(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(hookpoints=["model.layers.1", "model.layers.0"], log_every=1, max_tokens=64 * 60)
    trainer = Trainer(cfg, model=model, tokenizer=tok)
    saes = trainer.train()
    first, last = trainer.history[0], trainer.history[-1]
    for h in cfg.hookpoints:
        assert last[f"{h}/fvu"] < 0.6 * first[f"{h}/fvu"], (h, first[f"{h}/fvu"], last[f"{h}/fvu"])
        assert last[f"{h}/l0"] == 4.0
        loaded = AutoSAE.from_pretrained(f"{cfg.output_dir}/{h}")
        assert loaded.config.hookpoint == h and loaded.config.input_norm == "scale"
        _assert_identical(_weights({h: loaded}), _weights({h: saes[h]}))
    saved = json.loads((Path(cfg.output_dir) / "history.json").read_text())
    assert saved == json.loads(json.dumps(trainer.history))  # what was logged, as JSON
    curves = Path(cfg.output_dir) / "training_curves.png"
    if have_matplotlib():  # the dev extra installs it; without it only the JSON is written
        assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not curves.exists()


def test_input_scale_makes_the_mean_norm_sqrt_d_in(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(max_tokens=64 * 4, norm_estimation_batches=4)
    trainer = Trainer(cfg, model=model, tokenizer=tok)
    sae = trainer.train()["model.layers.1"]
    from hubsae.data.stream import ActivationStream
    from hubsae.train.build import harvest_source

    stream = ActivationStream(harvest_source(cfg, model, tok, cfg.hookpoints), cfg.batch_size, cfg.seed)
    it = stream()
    rows = torch.cat([next(it)[1]["model.layers.1"] for _ in range(4)])
    assert (rows * sae.config.input_scale).norm(dim=-1).mean() == pytest.approx(32**0.5, rel=1e-4)


def test_sparsity_warmup_scales_only_the_sparsity_losses(tiny_config):
    cfg = tiny_config(architecture="hubsae_relu", sae={"l1_coefficient": 2.0}, sparsity_warmup_steps=4)
    trainer = Trainer(cfg)
    sae = ReLUSAE(ReLUSAEConfig(d_in=32, d_sae=64, l1_coefficient=2.0))
    trainer.saes = {"h": sae}
    out = sae(torch.randn(8, 32), compute_losses=True)
    total = trainer._total_loss({"h": out}, sparsity=0.25)
    torch.testing.assert_close(total, out.losses["mse"] + 2.0 * 0.25 * out.losses["l1"])


def test_dead_latent_tracker_window():
    sae = ReLUSAE(ReLUSAEConfig(d_in=4, d_sae=3))
    tracker = DeadLatentTracker({"h": sae}, window=50, device="cpu")
    tracker.update({"h": torch.tensor([True, False, False])}, 60)
    tracker.update({"h": torch.tensor([False, True, False])}, 60)
    assert tracker.dead_masks()["h"].tolist() == [True, False, True]
    state = tracker.state_dict()
    other = DeadLatentTracker({"h": sae}, window=100, device="cpu")
    other.load_state_dict(state)
    assert other.since["h"].tolist() == [60, 0, 120]


def test_auxk_gets_dead_latents(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(dead_window_tokens=64, log_every=1, max_tokens=64 * 10, sae={"k": 1}, d_sae=256)
    trainer = Trainer(cfg, model=model, tokenizer=tok)
    trainer.train()
    assert any(h["model.layers.1/dead_pct"] > 0 and h["model.layers.1/loss_auxk"] > 0 for h in trainer.history)


def test_disk_cache_gives_identical_training(tiny_config, tiny_lm, tmp_path):
    model, tok, _, _ = tiny_lm
    live = Trainer(tiny_config(output_dir=str(tmp_path / "live")), model=model, tokenizer=tok).train()
    cached_cfg = tiny_config(output_dir=str(tmp_path / "cached"), activation_cache=str(tmp_path / "cache"))
    cached = Trainer(cached_cfg, model=model, tokenizer=tok).train()
    assert (tmp_path / "cache" / "index.json").is_file()
    _assert_identical(_weights(live), _weights(cached))
    # a second SAE from the same harvest, without a model at all
    again = Trainer(
        tiny_config(output_dir=str(tmp_path / "again"), activation_cache=str(tmp_path / "cache"), model="none")
    )
    _assert_identical(_weights(again.train()), _weights(cached))


def test_resume_in_process_is_bit_identical(tiny_config, tiny_lm, tmp_path):
    model, tok, _, _ = tiny_lm
    full = Trainer(tiny_config(output_dir=str(tmp_path / "full")), model=model, tokenizer=tok).train()
    cfg = tiny_config(output_dir=str(tmp_path / "part"), checkpoint_every=7)
    with pytest.raises(Interrupted):  # checkpoints at 7 and 14, then "dies" at 16
        Trainer(cfg, model=model, tokenizer=tok).train(on_step=interrupt_after(16))
    assert latest_checkpoint(cfg.output_dir).name == "step-00000014"
    resumed = Trainer(cfg, model=model, tokenizer=tok).train(resume=True)
    _assert_identical(_weights(full), _weights(resumed))


def test_resume_from_a_different_recipe_names_the_keys(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    Trainer(tiny_config(max_tokens=64 * 4), model=model, tokenizer=tok).train()
    changed = tiny_config(max_tokens=64 * 4, lr=1e-2, sae={"k": 8})
    with pytest.raises(ValueError, match=r"its recipe differs in \['lr', 'sae'\]"):
        Trainer(changed, model=model, tokenizer=tok).train(resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    g = torch.Generator().manual_seed(0)
    data = {"h": torch.randn(64 * 12, 8, generator=g)}
    data["h"][64 * 8 :] = float("nan")  # blocks 0-1 are fine, block 2 is poisoned
    write_cache(tensor_blocks(data, 64 * 4)(0, 0), tmp_path / "cache", 10**9, {})
    cfg = tiny_config(
        hookpoints=["h"],
        activation_cache=str(tmp_path / "cache"),
        model="none",
        checkpoint_every=4,
        sae={"k": 2, "check_finite": False},
        max_tokens=64 * 12,
        norm_estimation_batches=1,
    )
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 8 \(non-finite terms at h: \[.*step-00000008"):
        Trainer(cfg).train()
    assert latest_checkpoint(cfg.output_dir).name == "step-00000008"


def test_bad_hookpoint_and_sae_key_are_named(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    with pytest.raises(ValueError, match="model.layers.9"):
        Trainer(tiny_config(hookpoints=["model.layers.9"]), model=model, tokenizer=tok).train()
    with pytest.raises(StrictDataclassError, match="kk"):  # refused when the config is built
        tiny_config(sae={"kk": 3})


def test_gradient_accumulation_matches_one_big_batch(tiny_config, tmp_path):
    g = torch.Generator().manual_seed(0)
    data = {"h": torch.randn(64 * 16, 8, generator=g) @ torch.randn(8, 8, generator=g)}
    write_cache(tensor_blocks(data, 64 * 4)(0, 0), tmp_path / "cache", 10**9, {})
    common = dict(
        hookpoints=["h"], activation_cache=str(tmp_path / "cache"), model="none", d_sae=32, max_tokens=64 * 10
    )
    big = Trainer(tiny_config(output_dir=str(tmp_path / "big"), batch_size=64, norm_estimation_batches=2, **common))
    acc = Trainer(
        tiny_config(
            output_dir=str(tmp_path / "acc"), batch_size=32, grad_accum_steps=2, norm_estimation_batches=4, **common
        )
    )
    a, b = big.train()["h"].state_dict(), acc.train()["h"].state_dict()
    assert acc.step == big.step == 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_trackers_only_when_installed(monkeypatch, caplog):
    import importlib.util

    from hubsae.train import TrainConfig
    from hubsae.train.metrics import resolve_trackers

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert resolve_trackers(TrainConfig(dataset="x")) == []  # auto: silently nothing
    assert resolve_trackers(TrainConfig(dataset="x", log_with=["wandb"])) == []
    assert "wandb is not installed" in caplog.text
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert resolve_trackers(TrainConfig(dataset="x")) == ["tensorboard"]
    assert resolve_trackers(TrainConfig(dataset="x", log_with=["tensorboard", "wandb"])) == ["tensorboard", "wandb"]


def test_resuming_a_finished_run_changes_nothing(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(max_tokens=64 * 4)
    done = _weights(Trainer(cfg, model=model, tokenizer=tok).train())
    again = Trainer(cfg, model=model, tokenizer=tok)
    _assert_identical(_weights(again.train(resume=True)), done)
    assert again.step == 4
