"""`hubsae push DIR REPO` against the local Hub server."""

import argparse
import json

import numpy as np
import pytest
import torch

import hubsae
from hubsae import AutoSAE, list_saes
from hubsae.cli import COMMANDS
from hubsae.cli import push as push_cli


def _push(argv: list[str]) -> None:
    """What `hubsae push ...` runs (the other subcommands are not imported here)."""
    assert ("push", "hubsae.cli.push") in [(name, module) for name, module, _ in COMMANDS]
    parser = argparse.ArgumentParser(prog="hubsae push")
    push_cli.add_arguments(parser)
    push_cli.run(parser.parse_args(argv))


def test_push_a_folder_of_sae_folders(hub, tmp_path):
    saes = {
        "layer1": hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.1")),
        "sweep/k4": hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=32, k=4, hookpoint="model.layers.2")),
    }
    for sub, sae in saes.items():
        sae.save_pretrained(tmp_path / "run" / sub)
    (tmp_path / "metrics.json").write_text(json.dumps({"layer1": {"l0": 2.0, "fvu": 0.3}}))
    _push([str(tmp_path / "run"), "tester/cli", "--metrics", str(tmp_path / "metrics.json"), "--tag", "smollm2"])
    index = list_saes("tester/cli")
    assert set(index) == {"layer1", "sweep/k4"} and index["layer1"]["metrics"]["fvu"] == 0.3
    x = torch.randn(4, 8)
    for sub, sae in saes.items():
        torch.testing.assert_close(AutoSAE.from_pretrained("tester/cli", subfolder=sub).encode(x), sae.encode(x))
    commits = [p for m, p in hub.state.requests if m == "POST" and "/commit/" in p]
    assert len(commits) == 1


def test_push_one_published_sae_folder_converts_it(hub, tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_3" / "width_4k" / "average_l0_9"
    folder.mkdir(parents=True)
    arrays = {"W_enc": np.random.randn(8, 4096), "W_dec": np.random.randn(4096, 8), "b_enc": np.zeros(4096),
              "b_dec": np.zeros(8), "threshold": np.full(4096, 0.2)}  # fmt: skip
    np.savez(folder / "params.npz", **{k: v.astype(np.float32) for k, v in arrays.items()})
    _push([str(folder), "tester/converted", "--revision", "gemma"])
    sub = "model.layers.3.post_feedforward_layernorm"
    assert list(list_saes("tester/converted", revision="gemma")) == [sub]
    sae = AutoSAE.from_pretrained("tester/converted", subfolder=sub, revision="gemma")
    assert type(sae) is hubsae.JumpReLUSAE and torch.equal(sae.threshold, torch.full((4096,), 0.2))


def test_push_of_a_folder_without_saes_or_hookpoint_fails(hub, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no SAE folder"):
        _push([str(tmp_path / "empty"), "tester/x"])
    hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2)).save_pretrained(tmp_path / "nohook")
    with pytest.raises(ValueError, match="has no hookpoint"):
        _push([str(tmp_path / "nohook"), "tester/x"])


def test_hubsae_push_command_in_a_fresh_process(hub, tmp_path):
    """The real entry point, configured the way users point it at a Hub: environment variables."""
    import os
    import subprocess
    import sys

    import huggingface_hub.constants as hf_constants

    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.5"))
    sae.save_pretrained(tmp_path / "one")
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_CACHE": str(tmp_path / "child_cache"), "HF_TOKEN": "hf_test_token", "NO_PROXY": "127.0.0.1"}  # fmt: skip
    cmd = [sys.executable, "-m", "hubsae.cli", "push", str(tmp_path / "one"), "tester/from-cli", "--private"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 SAE(s) (model.layers.5) -> " in done.stderr
    assert hub.state.repos["tester/from-cli"].private
    assert hf_constants.HF_HUB_CACHE != str(tmp_path / "child_cache")  # this process's cache is its own
    torch.testing.assert_close(
        AutoSAE.from_pretrained("tester/from-cli", subfolder="model.layers.5").W_dec, sae.W_dec, rtol=0, atol=0
    )


def test_push_of_a_training_output_dir_skips_its_checkpoints(hub, tmp_path):
    """A run folder holds the final SAE and copies of it under checkpoints/step-*/saes/: push only the SAE."""
    from huggingface_hub import HfApi

    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.1"))
    run = tmp_path / "run"
    sae.save_pretrained(run / "model.layers.1")
    sae.save_pretrained(run / "checkpoints" / "step-00000040" / "saes" / "model.layers.1")
    sae.save_pretrained(run / "checkpoints" / ".tmp-step-00000050" / "saes" / "model.layers.1")
    _push([str(run), "tester/run"])
    assert set(list_saes("tester/run")) == {"model.layers.1"}
    assert not [f for f in HfApi().list_repo_files("tester/run") if "checkpoints" in f]


@pytest.mark.parametrize(
    "base, card_base",
    [("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"), ("/data/models/llama", None)],
)
def test_card_names_a_base_model_only_when_it_is_a_hub_id(hub, tmp_path, base, card_base):
    from huggingface_hub import ModelCard

    config = hubsae.TopKSAEConfig(d_in=8, d_sae=16, k=2, hookpoint="model.layers.1", base_model_name_or_path=base)
    hubsae.TopKSAE(config).save_pretrained(tmp_path / "model.layers.1")
    _push([str(tmp_path), "tester/card"])
    card = ModelCard.load("tester/card")
    assert card.data.base_model == card_base
    assert "/data/models" not in card.content
