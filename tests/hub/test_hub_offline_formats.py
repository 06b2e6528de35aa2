"""Offline loading from the cache, and published formats pulled from a Hub repo."""

import json
import time

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file

import hubsae
from hubsae import AutoSAE, list_saes, push_to_hub

REPO = "tester/offline-saes"


def test_cached_repo_loads_offline_and_a_missing_one_fails_at_once(hub, monkeypatch):
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=16, d_sae=32, k=4, hookpoint="model.layers.3"))
    push_to_hub([sae], REPO)
    AutoSAE.from_pretrained(REPO, subfolder="model.layers.3")  # online: fills the cache
    list_saes(REPO)
    n_requests = len(hub.state.requests)
    for kwargs in ({}, {"dtype": torch.float64}):  # local_files_only: the cache, even with the Hub reachable
        again = AutoSAE.from_pretrained(REPO, subfolder="model.layers.3", local_files_only=True, **kwargs)
        assert torch.equal(again.W_enc.float(), sae.W_enc) and again.config.hookpoint == "model.layers.3"
    assert len(hub.state.requests) == n_requests
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        AutoSAE.from_pretrained(REPO, subfolder="model.layers.4", local_files_only=True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    cached = AutoSAE.from_pretrained(REPO, subfolder="model.layers.3")
    elapsed = time.perf_counter() - start
    assert len(hub.state.requests) == n_requests  # nothing asked of the server
    assert elapsed < 2.0
    x = torch.randn(3, 16)
    torch.testing.assert_close(cached.encode(x), sae.encode(x), rtol=0, atol=0)
    assert list(list_saes(REPO)) == ["model.layers.3"]
    with pytest.raises(
        FileNotFoundError, match="hubsae_index.json of tester/never-downloaded is not in the local cache"
    ):
        list_saes("tester/never-downloaded")

    for repo, sub in (("tester/never-downloaded", "model.layers.3"), (REPO, "model.layers.4")):
        start = time.perf_counter()
        with pytest.raises(FileNotFoundError, match="not in the local cache.* HF_HUB_OFFLINE is set"):
            AutoSAE.from_pretrained(repo, subfolder=sub)
        assert time.perf_counter() - start < 1.0  # no retries, no backoff
    assert len(hub.state.requests) == n_requests


def test_published_formats_from_a_hub_repo(hub, tmp_path):
    api = HfApi()
    # Gemma Scope: the config is in the repo name and the path
    gs = tmp_path / "gs" / "layer_5" / "width_4k" / "average_l0_12"
    gs.mkdir(parents=True)
    w_enc = np.random.randn(8, 4096).astype(np.float32)
    np.savez(gs / "params.npz", W_enc=w_enc, W_dec=np.random.randn(4096, 8).astype(np.float32),
             b_enc=np.zeros(4096, np.float32), b_dec=np.zeros(8, np.float32), threshold=np.full(4096, 0.1, np.float32))  # fmt: skip
    api.create_repo("google/gemma-scope-2b-pt-res")
    api.upload_folder(repo_id="google/gemma-scope-2b-pt-res", folder_path=tmp_path / "gs")
    sae = AutoSAE.from_pretrained("google/gemma-scope-2b-pt-res", subfolder="layer_5/width_4k/average_l0_12")
    assert type(sae) is hubsae.JumpReLUSAE and sae.config.hookpoint == "model.layers.5"
    assert torch.equal(sae.W_enc, torch.from_numpy(w_enc))

    # Llama Scope keeps its weights one folder down; sparsify its model name one folder up
    ls = tmp_path / "ls" / "L3R"
    (ls / "checkpoints").mkdir(parents=True)
    (ls / "hyperparams.json").write_text(json.dumps({"d_model": 8, "d_sae": 16, "act_fn": "relu", "norm_activation": "inference",
                                                     "sparsity_include_decoder_norm": False, "hook_point_in": "blocks.3.hook_resid_post"}))  # fmt: skip
    save_file({"encoder.weight": torch.randn(16, 8), "encoder.bias": torch.zeros(16), "decoder.weight": torch.randn(8, 16),
               "decoder.bias": torch.zeros(8)}, ls / "checkpoints" / "final.safetensors")  # fmt: skip
    (tmp_path / "ls" / "config.json").write_text(json.dumps({"model": "gpt2"}))
    sp = tmp_path / "ls" / "h.1"
    sp.mkdir()
    (sp / "cfg.json").write_text(json.dumps({"d_in": 8, "k": 2, "num_latents": 16}))
    save_file({"encoder.weight": torch.randn(16, 8), "encoder.bias": torch.zeros(16), "W_dec": torch.randn(16, 8),
               "b_dec": torch.zeros(8)}, sp / "sae.safetensors")  # fmt: skip
    api.create_repo("tester/mixed")
    api.upload_folder(repo_id="tester/mixed", folder_path=tmp_path / "ls")
    llama = AutoSAE.from_pretrained("tester/mixed", subfolder="L3R")
    assert type(llama) is hubsae.ReLUSAE and llama.config.hookpoint == "model.layers.3"
    sparsify = AutoSAE.from_pretrained("tester/mixed", subfolder="h.1")
    assert type(sparsify) is hubsae.TopKSAE and sparsify.config.hookpoint == "transformer.h.1"
    with pytest.raises(ValueError, match="not an SAE folder of a known format"):
        AutoSAE.from_pretrained("tester/mixed")  # the root holds only the training config
