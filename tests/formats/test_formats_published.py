"""Published SAE formats: files built here in each publisher's layout, loaded by AutoSAE, and their
features compared with an independent computation of that format's math."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import hubsae
from hubsae import AutoSAE

D_IN, D_SAE = 16, 64


def _x(n: int = 12) -> torch.Tensor:
    return torch.randn(n, D_IN) * 2


def _write_json(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _dense_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


def _check(sae, x, features, reconstruction=None) -> None:
    torch.testing.assert_close(sae.encode(x), features, rtol=1e-5, atol=1e-5)
    if reconstruction is not None:
        torch.testing.assert_close(sae(x).reconstruction, reconstruction, rtol=1e-5, atol=1e-5)


# ---- SAELens -------------------------------------------------------------------------------


def _saelens(folder, arch: str, tensors: dict, **cfg) -> None:
    meta = {"model_name": cfg.pop("model_name", "gpt2"), "hook_name": cfg.pop("hook_name", "blocks.3.hook_resid_post")}
    _write_json(folder / "cfg.json", {"d_in": D_IN, "d_sae": D_SAE, "architecture": arch, "dtype": "float32",
                                      "normalize_activations": "none", "metadata": meta, **cfg})  # fmt: skip
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "sae_weights.safetensors")


def _base_tensors():
    return {"W_enc": torch.randn(D_IN, D_SAE) / 4, "W_dec": torch.randn(D_SAE, D_IN), "b_dec": torch.randn(D_IN) / 2}


def test_saelens_standard(tmp_path):
    t = {**_base_tensors(), "b_enc": torch.randn(D_SAE) / 4}
    _saelens(tmp_path, "standard", t, apply_b_dec_to_input=True)
    sae = AutoSAE.from_pretrained(tmp_path)
    assert type(sae) is hubsae.ReLUSAE
    assert sae.config.hookpoint == "transformer.h.3" and sae.config.base_model_name_or_path == "gpt2"
    x = _x()
    f = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    _check(sae, x, f, f @ t["W_dec"] + t["b_dec"])


def test_saelens_topk_rescaled_by_decoder_norm(tmp_path):
    t = {**_base_tensors(), "b_enc": torch.randn(D_SAE) / 4}
    _saelens(tmp_path, "topk", t, k=5, rescale_acts_by_decoder_norm=True, hook_name="model.layers.2")
    sae = AutoSAE.from_pretrained(tmp_path)
    assert type(sae) is hubsae.TopKSAE and sae.config.k == 5 and sae.config.hookpoint == "model.layers.2"
    x = _x()
    norms = t["W_dec"].norm(dim=-1)
    f = _dense_topk(((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms, 5)
    _check(sae, x, f, (f / norms) @ t["W_dec"] + t["b_dec"])


def test_saelens_jumprelu_with_a_negative_threshold(tmp_path):
    t = {**_base_tensors(), "b_enc": torch.randn(D_SAE) / 4, "threshold": torch.rand(D_SAE) * 0.5}
    t["threshold"][:8] = -0.3  # SAELens: relu(pre) * (pre > threshold)
    _saelens(tmp_path, "jumprelu", t, apply_b_dec_to_input=False, model_name="gemma-2-2b",
             hook_name="blocks.4.hook_mlp_out")  # fmt: skip
    sae = AutoSAE.from_pretrained(tmp_path)
    assert type(sae) is hubsae.JumpReLUSAE
    assert sae.config.hookpoint == "model.layers.4.post_feedforward_layernorm"
    x = _x(64)
    pre = x @ t["W_enc"] + t["b_enc"]
    f = torch.relu(pre) * (pre > t["threshold"])
    _check(sae, x, f, f @ t["W_dec"] + t["b_dec"])


def test_saelens_gated(tmp_path):
    t = {
        **_base_tensors(),
        "b_gate": torch.randn(D_SAE) / 4,
        "r_mag": torch.randn(D_SAE) / 4,
        "b_mag": torch.randn(D_SAE) / 4,
    }
    _saelens(tmp_path, "gated", t, hook_name="blocks.1.attn.hook_z", model_name="meta-llama/Llama-3.2-1B")
    sae = AutoSAE.from_pretrained(tmp_path)
    assert type(sae) is hubsae.GatedSAE and sae.config.hookpoint == "model.layers.1.self_attn.o_proj:input"
    x = _x()
    s = x - t["b_dec"]
    f = ((s @ t["W_enc"] + t["b_gate"]) > 0) * torch.relu(s @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"])
    _check(sae, x, f, f @ t["W_dec"] + t["b_dec"])


def test_saelens_pre_6_config_and_unsupported_normalization(tmp_path):
    t = {**_base_tensors(), "b_enc": torch.randn(D_SAE) / 4}
    save_file(t, tmp_path / "sae_weights.safetensors")
    old = {"d_in": D_IN, "d_sae": D_SAE, "hook_point": "blocks.0.hook_resid_pre", "model_name": "gpt2",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3}, "sae_lens_version": "3.0.0"}  # fmt: skip
    _write_json(tmp_path / "cfg.json", old)
    sae = AutoSAE.from_pretrained(tmp_path)
    assert type(sae) is hubsae.TopKSAE and sae.config.k == 3 and sae.config.hookpoint == "transformer.h.0:input"
    x = _x()
    _check(sae, x, _dense_topk((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 3))
    _write_json(tmp_path / "cfg.json", {**old, "normalize_activations": "layer_norm"})
    with pytest.raises(ValueError, match="normalize_activations='layer_norm'"):
        AutoSAE.from_pretrained(tmp_path)


# ---- sparsify ------------------------------------------------------------------------------


def test_sparsify_folder_named_after_its_hookpoint(tmp_path):
    _write_json(tmp_path / "config.json", {"model": "HuggingFaceTB/SmolLM2-135M", "batch_size": 8})  # training config
    folder = tmp_path / "layers.2"
    _write_json(folder / "cfg.json", {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True,
                                      "num_latents": 0, "k": 6, "multi_topk": False, "skip_connection": False,
                                      "transcode": False, "d_in": D_IN})  # fmt: skip
    enc_w, enc_b = torch.randn(D_SAE, D_IN) / 4, torch.randn(D_SAE) / 4  # nn.Linear(d_in, d_sae)
    w_dec, b_dec = torch.randn(D_SAE, D_IN), torch.randn(D_IN)
    save_file(
        {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": w_dec, "b_dec": b_dec}, folder / "sae.safetensors"
    )
    sae = AutoSAE.from_pretrained(tmp_path, subfolder="layers.2")
    assert type(sae) is hubsae.TopKSAE and sae.config.d_sae == D_SAE and sae.config.k == 6
    assert sae.config.hookpoint == "model.layers.2"
    assert sae.config.base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M"
    x = _x()
    pre = torch.relu(torch.nn.functional.linear(x - b_dec, enc_w, enc_b))  # sparsify's fused_encoder
    vals, idx = pre.topk(6, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, idx, vals)
    _check(sae, x, f, f @ w_dec + b_dec)


# ---- Gemma Scope ---------------------------------------------------------------------------


def _gemma_scope(root, site="res", layer=5, keys=("W_enc", "W_dec", "b_enc", "b_dec", "threshold"), d_sae=4096):
    folder = root / f"gemma-scope-2b-pt-{site}" / f"layer_{layer}" / "width_4k" / "average_l0_12"
    folder.mkdir(parents=True)
    arrays = {"W_enc": np.random.randn(D_IN, d_sae).astype(np.float32) / 4,
              "W_dec": np.random.randn(d_sae, D_IN).astype(np.float32),
              "b_enc": np.random.randn(d_sae).astype(np.float32) / 4,
              "b_dec": np.random.randn(D_IN).astype(np.float32),
              "threshold": np.random.rand(d_sae).astype(np.float32) * 0.5}  # fmt: skip
    np.savez(folder / "params.npz", **{k: v for k, v in arrays.items() if k in keys})
    return folder, {k: torch.from_numpy(v) for k, v in arrays.items()}


def test_gemma_scope_npz_config_from_the_path(tmp_path):
    folder, p = _gemma_scope(tmp_path)
    sae = AutoSAE.from_pretrained(folder)
    assert type(sae) is hubsae.JumpReLUSAE and (sae.config.d_in, sae.config.d_sae) == (D_IN, 4096)
    assert sae.config.hookpoint == "model.layers.5" and sae.config.base_model_name_or_path == "google/gemma-2-2b"
    x = _x()
    pre = x @ p["W_enc"] + p["b_enc"]  # the Gemma Scope tutorial's JumpReLUSAE: no b_dec subtraction
    f = (pre > p["threshold"]) * torch.relu(pre)
    _check(sae, x, f, f @ p["W_dec"] + p["b_dec"])
    mlp, _ = _gemma_scope(tmp_path, site="mlp", layer=7)
    assert AutoSAE.from_pretrained(mlp).config.hookpoint == "model.layers.7.post_feedforward_layernorm"
    tc, _ = _gemma_scope(tmp_path, site="transcoders", layer=2)
    cfg = AutoSAE.from_pretrained(tc).config
    assert (cfg.hookpoint, cfg.hookpoint_out) == (
        "model.layers.2.pre_feedforward_layernorm",
        "model.layers.2.post_feedforward_layernorm",
    )


def test_gemma_scope_npz_missing_key_and_wrong_width(tmp_path):
    folder, _ = _gemma_scope(tmp_path, keys=("W_enc", "W_dec", "b_enc", "b_dec"))
    with pytest.raises(ValueError, match=r"params.npz lacks \['threshold'\]"):
        AutoSAE.from_pretrained(folder)
    folder, _ = _gemma_scope(tmp_path / "w", d_sae=100)
    with pytest.raises(ValueError, match="width 4096 but W_enc has 100 latents"):
        AutoSAE.from_pretrained(folder)


def _gemma_scope_2(folder, type_="sae", hook_in="model.layers.3.output", hook_out=None, affine=False):
    t = {"w_enc": torch.randn(D_IN, D_SAE) / 4, "w_dec": torch.randn(D_SAE, D_IN), "b_enc": torch.randn(D_SAE) / 4,
         "b_dec": torch.randn(D_IN), "threshold": torch.rand(D_SAE) * 0.5}  # fmt: skip
    _write_json(folder / "config.json", {"width": D_SAE, "model_name": "google/gemma-3-1b-pt", "architecture": "jump_relu",
                                         "l0": 20, "affine_connection": affine, "type": type_,
                                         "hf_hook_point_in": hook_in, "hf_hook_point_out": hook_out or hook_in})  # fmt: skip
    save_file(t, folder / "params.safetensors")
    return t


def test_gemma_scope_2_sae_and_transcoder(tmp_path):
    t = _gemma_scope_2(tmp_path / "resid_post" / "layer_3_width_16k_l0_small")
    sae = AutoSAE.from_pretrained(tmp_path, subfolder="resid_post/layer_3_width_16k_l0_small")
    assert type(sae) is hubsae.JumpReLUSAE and sae.config.hookpoint == "model.layers.3"
    assert sae.config.hookpoint_out is None and sae.config.base_model_name_or_path == "google/gemma-3-1b-pt"
    x = _x()
    pre = x @ t["w_enc"] + t["b_enc"]
    f = torch.relu(pre) * (pre > t["threshold"])
    _check(sae, x, f, f @ t["w_dec"] + t["b_dec"])

    tc = tmp_path / "transcoder"
    _gemma_scope_2(tc, "transcoder", "model.layers.5.pre_feedforward_layernorm.output",
                   "model.layers.5.post_feedforward_layernorm.output")  # fmt: skip
    sae = AutoSAE.from_pretrained(tc)
    assert sae.config.hookpoint == "model.layers.5.pre_feedforward_layernorm"
    assert sae.config.hookpoint_out == "model.layers.5.post_feedforward_layernorm"
    _gemma_scope_2(tc, "transcoder", affine=True)
    with pytest.raises(ValueError, match="affine skip connection"):
        AutoSAE.from_pretrained(tc)


# ---- Llama Scope ---------------------------------------------------------------------------


def _lm_saes_reference(sd: dict, hp: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lm_saes' SparseAutoEncoder.from_pretrained + encode/decode, step by step (sae.py @ b932639)."""
    sd = {k: v.clone() for k, v in sd.items()}
    s_in = math.sqrt(hp["d_model"]) / hp["dataset_average_activation_norm"]["in"]
    s_out = math.sqrt(hp["d_model"]) / hp["dataset_average_activation_norm"]["out"]
    sd["encoder.bias"] = sd["encoder.bias"] / s_in  # standardize_parameters_of_dataset_activation_scaling
    sd["decoder.bias"] = sd["decoder.bias"] / s_out
    sd["decoder.weight"] = sd["decoder.weight"] * s_in / s_out
    norm = torch.norm(sd["decoder.weight"], p=2, dim=0)  # transform_to_unit_decoder_norm
    sd["decoder.weight"] = sd["decoder.weight"] / norm
    sd["encoder.weight"] = sd["encoder.weight"] * norm[:, None]
    sd["encoder.bias"] = sd["encoder.bias"] * norm
    hidden = torch.nn.functional.linear(x, sd["encoder.weight"], sd["encoder.bias"])  # norm factor 1 ("inference")
    f = hidden.where(hidden > hp["jump_relu_threshold"], 0)
    return f, torch.nn.functional.linear(f, sd["decoder.weight"], sd["decoder.bias"])


def test_llama_scope_follows_lm_saes(tmp_path):
    hp = {"d_model": D_IN, "d_sae": D_SAE, "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": False,
          "act_fn": "jumprelu", "jump_relu_threshold": 0.4, "norm_activation": "dataset-wise",
          "dataset_average_activation_norm": {"in": 9.5, "out": 9.5}, "sparsity_include_decoder_norm": True,
          "top_k": 50, "hook_point_in": "blocks.7.hook_resid_post", "hook_point_out": "blocks.7.hook_resid_post"}  # fmt: skip
    folder = tmp_path / "Llama3_1-8B-Base-L7R-8x"
    _write_json(folder / "hyperparams.json", hp)
    sd = {"encoder.weight": torch.randn(D_SAE, D_IN) / 4, "encoder.bias": torch.randn(D_SAE) / 4,
          "decoder.weight": torch.randn(D_IN, D_SAE) * 0.3, "decoder.bias": torch.randn(D_IN)}  # fmt: skip
    (folder / "checkpoints").mkdir()
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, folder / "checkpoints" / "final.safetensors")
    sd = {k: v.to(torch.bfloat16).float() for k, v in sd.items()}
    sae = AutoSAE.from_pretrained(folder)
    assert type(sae) is hubsae.JumpReLUSAE and sae.config.hookpoint == "model.layers.7"
    assert sae.dtype == torch.float32 and not sae.config.subtract_b_dec
    assert sae.config.base_model_name_or_path == "meta-llama/Llama-3.1-8B"  # the files name no model
    x = _x(64) * 3
    f, x_hat = _lm_saes_reference(sd, hp, x)
    assert 0 < (f > 0).sum() < f.numel()  # the threshold matters in this test
    _check(sae, x, f, x_hat)
    assert AutoSAE.from_pretrained(folder, dtype="bfloat16").dtype == torch.bfloat16


# ---- round trip ----------------------------------------------------------------------------


def test_converted_sae_saves_as_a_hubsae_folder(tmp_path):
    folder, p = _gemma_scope(tmp_path / "src")
    sae = AutoSAE.from_pretrained(folder)
    sae.save_pretrained(tmp_path / "out")
    again = AutoSAE.from_pretrained(tmp_path / "out")
    assert type(again) is hubsae.JumpReLUSAE and again.config.hookpoint == "model.layers.5"
    x = _x()
    torch.testing.assert_close(again.encode(x), sae.encode(x), rtol=0, atol=0)
