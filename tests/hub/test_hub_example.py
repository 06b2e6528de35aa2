"""examples/load_published_sae.py, run against the local Hub server with a small Gemma Scope file."""

import importlib.util
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import HfApi

import hubsae

EXAMPLE = Path(__file__).parents[2] / "examples" / "load_published_sae.py"


def test_example_loads_gemma_scope_by_repo_id(hub, tmp_path, capsys):
    folder = tmp_path / "repo" / "layer_12" / "width_4k" / "average_l0_82"
    folder.mkdir(parents=True)
    w_enc = np.random.randn(32, 4096).astype(np.float32) / 4
    np.savez(folder / "params.npz", W_enc=w_enc, W_dec=np.random.randn(4096, 32).astype(np.float32),
             b_enc=np.zeros(4096, np.float32), b_dec=np.zeros(32, np.float32), threshold=np.full(4096, 0.5, np.float32))  # fmt: skip
    HfApi().create_repo("google/gemma-scope-2b-pt-res")
    HfApi().upload_folder(repo_id="google/gemma-scope-2b-pt-res", folder_path=tmp_path / "repo")
    spec = importlib.util.spec_from_file_location("load_published_sae", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    sae = example.main("google/gemma-scope-2b-pt-res", "layer_12/width_4k/average_l0_82", str(tmp_path / "out"))
    out = capsys.readouterr().out
    assert "JumpReLUSAE, d_in=32, d_sae=4096" in out and "'model.layers.12' of google/gemma-2-2b" in out
    assert torch.equal(sae.W_enc, torch.from_numpy(w_enc))
    saved = hubsae.AutoSAE.from_pretrained(tmp_path / "out")
    assert type(saved) is hubsae.JumpReLUSAE and torch.equal(saved.threshold, sae.threshold)
