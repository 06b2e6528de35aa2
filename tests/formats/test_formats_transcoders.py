"""sparsify skip transcoders: files in sparsify's layout (cfg.json + sae.safetensors, read at commit 9d3b136),
loaded by AutoSAE, against a hand-written copy of `SparseCoder.forward`."""

import json

import pytest
import torch
from safetensors.torch import save_file

import hubsae
from hubsae import AutoSAE

D_IN, D_SAE, K = 16, 64, 6


def write_sparsify(root, name: str, transcode: bool, skip: bool, with_w_skip: bool | None = None) -> dict:
    (root / name).mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model": "HuggingFaceTB/SmolLM2-135M"}))
    cfg = {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True, "num_latents": 0, "k": K,
           "multi_topk": False, "skip_connection": skip, "transcode": transcode, "d_in": D_IN}  # fmt: skip
    (root / name / "cfg.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    tensors = {"encoder.weight": torch.randn(D_SAE, D_IN) / 4, "encoder.bias": torch.randn(D_SAE) / 4,
               "W_dec": torch.randn(D_SAE, D_IN), "b_dec": torch.randn(D_IN)}  # fmt: skip
    if skip if with_w_skip is None else with_w_skip:
        tensors["W_skip"] = torch.randn(D_IN, D_IN) / 3  # an nn.Linear weight: (out, in)
    save_file(tensors, root / name / "sae.safetensors")
    return tensors


def sparsify_forward(t: dict, x: torch.Tensor, transcode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`SparseCoder.encode` (fused_encoder: relu(linear), then top-k) and `forward`'s sae_out."""
    pre = torch.relu(
        torch.nn.functional.linear(x if transcode else x - t["b_dec"], t["encoder.weight"], t["encoder.bias"])
    )
    acts, idx = pre.topk(K, dim=-1, sorted=False)
    out = (acts[..., None] * t["W_dec"][idx]).sum(-2) + t["b_dec"]
    if "W_skip" in t:
        out = out + x @ t["W_skip"].mT
    return torch.zeros_like(pre).scatter(-1, idx, acts), out


@pytest.mark.parametrize("transcode", [True, False])
def test_sparsify_skip_connection_matches_sparse_coder_forward(tmp_path, transcode):
    t = write_sparsify(tmp_path, "layers.2.mlp", transcode, skip=True)
    sae = AutoSAE.from_pretrained(tmp_path, subfolder="layers.2.mlp")
    assert type(sae) is hubsae.TopKSAE and sae.config.skip_connection
    if transcode:
        assert (sae.config.hookpoint, sae.config.hookpoint_out) == ("model.layers.2.mlp:input", "model.layers.2.mlp")
    x = torch.randn(10, D_IN) * 2
    features, out = sparsify_forward(t, x, transcode)
    torch.testing.assert_close(sae.encode(x), features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).reconstruction, out, rtol=1e-5, atol=1e-5)


def test_sparsify_skip_flag_and_weights_must_agree(tmp_path):
    write_sparsify(tmp_path / "a", "layers.1.mlp", True, skip=True, with_w_skip=False)
    with pytest.raises(ValueError, match=r"lacks \['W_skip'\]"):
        AutoSAE.from_pretrained(tmp_path / "a", subfolder="layers.1.mlp")
    write_sparsify(tmp_path / "b", "layers.1.mlp", True, skip=False, with_w_skip=True)
    with pytest.raises(ValueError, match="holds W_skip but .* has skip_connection false"):
        AutoSAE.from_pretrained(tmp_path / "b", subfolder="layers.1.mlp")
