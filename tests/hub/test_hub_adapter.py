"""An SAE and the LoRA adapter trained around it go up in one commit and come back together."""

import argparse

import pytest
import torch
from huggingface_hub import HfApi, snapshot_download
from peft import LoraConfig, get_peft_model
from tiny_models import tiny_llama

import hubsae
from hubsae.adapt import load_adapted, save_adapted
from hubsae.cli import push as hub_cli

REPO = "tester/adapted-sae"


def _tiny_llama():
    dims = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    return tiny_llama(64, seed=0, pad_token_id=None, **dims)


def test_push_sae_with_its_adapter_and_pull_both(hub, tmp_path):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=16, d_sae=32, k=3, hookpoint="model.layers.0"))
    lora = LoraConfig(r=2, target_modules=["model.layers.1.mlp.up_proj"], init_lora_weights=False)
    adapted = get_peft_model(_tiny_llama(), lora)
    save_adapted(adapted, [sae], tmp_path / "run")

    parser = argparse.ArgumentParser()
    hub_cli.add_arguments(parser)
    hub_cli.run(parser.parse_args([str(tmp_path / "run"), REPO]))  # what `hubsae push run REPO` does

    assert len([p for m, p in hub.state.requests if m == "POST" and "/commit/" in p]) == 1
    files = set(HfApi().list_repo_files(REPO))
    assert {"lora_adapter/adapter_config.json", "lora_adapter/adapter_model.safetensors"} <= files
    assert {"model.layers.0/config.json", "README.md", "hubsae_index.json"} <= files
    assert list(hubsae.list_saes(REPO)) == ["model.layers.0"]  # the adapter is not listed as an SAE

    local = snapshot_download(REPO)
    pulled, saes = load_adapted(_tiny_llama(), local)
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad(), hubsae.splice(adapted, sae):
        want = adapted(input_ids=ids).logits
    with torch.no_grad(), hubsae.splice(pulled, saes["model.layers.0"]):
        got = pulled(input_ids=ids).logits
    torch.testing.assert_close(got, want)


def test_extra_folder_cannot_shadow_an_sae(hub, tmp_path):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=16, d_sae=32, k=3, hookpoint="model.layers.0"))
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="would overwrite"):
        hubsae.push_to_hub([sae], REPO, extra_folders={"model.layers.0": tmp_path / "x"})
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        hubsae.push_to_hub([sae], REPO, extra_folders={"adapter": tmp_path / "missing"})
