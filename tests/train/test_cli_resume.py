"""`hubsae train` end to end: recipe + overrides, and SIGKILL mid-run then `--resume`."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from hubsae import AutoSAE
from hubsae.cli import main
from hubsae.train import TrainConfig, Trainer
from hubsae.train.checkpoint import latest_checkpoint


def _recipe(tmp_path, tiny_config, **fields):
    cfg = tiny_config(**fields).to_dict()
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def _state(folder):
    return AutoSAE.from_pretrained(folder).state_dict()


def test_cli_trains_with_overrides(tmp_path, tiny_config):
    recipe, cfg = _recipe(tmp_path, tiny_config, max_tokens=64 * 6)
    main(["train", str(recipe), "--override", "sae.k=3", "-o", "checkpoint_every=2"])
    sae = AutoSAE.from_pretrained(f"{cfg['output_dir']}/model.layers.1")
    assert sae.config.k == 3
    assert latest_checkpoint(cfg["output_dir"]).name == "step-00000006"
    with pytest.raises(ValueError, match="unknown key 'batchsize'"):
        main(["train", str(recipe), "--override", "batchsize=3"])


def test_sigkill_then_resume_gives_bit_identical_weights(tmp_path, tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    steps = 80
    recipe, cfg = _recipe(tmp_path, tiny_config, max_tokens=64 * steps, checkpoint_every=5, keep_checkpoints=1)
    cmd = [sys.executable, "-m", "hubsae.cli", "train", str(recipe)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while latest_checkpoint(cfg["output_dir"]) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_at = latest_checkpoint(cfg["output_dir"])
    assert killed_at is not None and int(killed_at.name.split("-")[1]) < steps
    assert not os.path.exists(f"{cfg['output_dir']}/model.layers.1")  # it never finished

    done = subprocess.run([*cmd, "--resume"], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    reference = dict(cfg, output_dir=str(tmp_path / "reference"))
    Trainer(TrainConfig(**reference), model=model, tokenizer=tok).train()
    resumed, ref = _state(f"{cfg['output_dir']}/model.layers.1"), _state(f"{reference['output_dir']}/model.layers.1")
    for k in ref:
        assert torch.equal(resumed[k], ref[k]), k
