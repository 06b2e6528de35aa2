"""No lost run: output_dir is checked before the first step, a finished run is never overwritten
silently, and a save that fails at the end leaves the weights somewhere, named."""

import os

import pytest
import torch

from hubsae import AutoSAE
from hubsae.train import Trainer
from hubsae.train import trainer as trainer_module


def never_steps(trainer):
    """`on_step` hook that fails the test if training gets as far as its first step."""
    raise AssertionError("a training step ran before output_dir was checked")


def test_output_dir_that_is_a_file_is_refused_before_training(tiny_config, tiny_lm, tmp_path):
    model, tok, _, _ = tiny_lm
    target = tmp_path / "run"
    target.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file"):
        Trainer(tiny_config(output_dir=str(target)), model=model, tokenizer=tok).train(on_step=never_steps)


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_output_dir_is_refused_before_training(tiny_config, tiny_lm, tmp_path, where):
    model, tok, _, _ = tiny_lm
    if where == "proc":
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc")
        target = "/proc/hubsae-cannot-write-here/run"  # even root cannot create folders in procfs
    else:
        (tmp_path / "plain").write_text("x")
        target = str(tmp_path / "plain" / "run")
    with pytest.raises(PermissionError, match="is not writable.*nothing was trained"):
        Trainer(tiny_config(output_dir=target), model=model, tokenizer=tok).train(on_step=never_steps)


def test_a_finished_run_is_not_overwritten_without_asking(tiny_config, tiny_lm):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(max_tokens=64 * 4)
    first = Trainer(cfg, model=model, tokenizer=tok).train()
    weights = first["model.layers.1"].W_dec.detach().clone()
    with pytest.raises(FileExistsError, match=r"already holds a run \(model.layers.1/, checkpoints/"):
        Trainer(tiny_config(max_tokens=64 * 4, seed=1), model=model, tokenizer=tok).train()
    on_disk = AutoSAE.from_pretrained(f"{cfg.output_dir}/model.layers.1")
    assert torch.equal(on_disk.W_dec, weights)  # untouched by the refused run
    Trainer(cfg, model=model, tokenizer=tok).train(resume=True)  # resuming a finished run is fine
    again = Trainer(tiny_config(max_tokens=64 * 4, seed=1), model=model, tokenizer=tok).train(overwrite=True)
    assert not torch.equal(again["model.layers.1"].W_dec, weights)


def test_unfinished_run_with_checkpoints_is_not_restarted_silently(tiny_config, tiny_lm, monkeypatch):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(max_tokens=64 * 8, checkpoint_every=2)
    monkeypatch.setattr(Trainer, "save_saes", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, model=model, tokenizer=tok).train()
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match=r"\(checkpoints/\)"):
        Trainer(cfg, model=model, tokenizer=tok).train()


def test_a_failing_final_save_leaves_the_weights_elsewhere(tiny_config, tiny_lm, monkeypatch, tmp_path):
    model, tok, _, _ = tiny_lm
    cfg = tiny_config(max_tokens=64 * 4)
    monkeypatch.setattr(trainer_module.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer_module.ckpt, "save_checkpoint", disk_full)
    trainer = Trainer(cfg, model=model, tokenizer=tok)
    with pytest.raises(OSError, match="No space left on device.*saved to (\\S+) instead") as info:
        trainer.train()
    rescue = info.value.args[0].rsplit("saved to ", 1)[1].removesuffix(" instead")
    rescued = AutoSAE.from_pretrained(f"{rescue}/rank0/model.layers.1")
    assert torch.equal(rescued.W_dec, trainer.saes["model.layers.1"].W_dec)
