"""Checkpoint files: readable by the group like any file, and never unpickled."""

import os
import stat

import pytest
import torch

import hubsae
from hubsae.train import checkpoint as ckpt


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_rank_state_holding_objects_is_refused_without_weights_only_advice(tmp_path):
    torch.save({"optimizer": _Evil()}, tmp_path / "rank-0.pt")
    with pytest.raises(ValueError, match="hubsae never unpickles arbitrary objects") as info:
        ckpt.load_rank_state(tmp_path, 0)
    assert "weights_only=False)" in str(info.value) and "do not load it" in str(info.value)


def test_sae_saved_by_a_rank_other_than_0_gets_the_umask_mode(tmp_path, monkeypatch):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.1"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    old = os.umask(0o022)
    try:
        ckpt.save_sae(sae, tmp_path / "sae")
    finally:
        os.umask(old)
    weights = tmp_path / "sae" / "model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == 0o644
    monkeypatch.undo()
    assert torch.equal(hubsae.AutoSAE.from_pretrained(tmp_path / "sae").W_dec, sae.W_dec)
