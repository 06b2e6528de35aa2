"""Transcoders and skip transcoders through the base class: y_hat = f W_dec + b_dec + x W_skip, any architecture."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

import hubsae
from hubsae import AutoSAE
from hubsae.saes import REGISTRY

D_IN, D_OUT, D_SAE = 6, 10, 32

ARCHITECTURES = {
    "topk": (hubsae.TopKSAEConfig, {"k": 4}),
    "batchtopk": (hubsae.BatchTopKSAEConfig, {"k": 4}),
    "relu": (hubsae.ReLUSAEConfig, {}),
    "jumprelu": (hubsae.JumpReLUSAEConfig, {}),
    "gated": (hubsae.GatedSAEConfig, {}),
    "matryoshka": (hubsae.MatryoshkaSAEConfig, {"k": 4, "group_sizes": [8, 8, 16]}),
    "switch": (hubsae.SwitchSAEConfig, {"k": 2, "num_experts": 4}),
}


def skip_transcoder(name: str, **fields):
    config_cls, extra = ARCHITECTURES[name]
    config = config_cls(
        d_in=D_IN, d_out=D_OUT, d_sae=D_SAE, skip_connection=True, subtract_b_dec=False,
        hookpoint="model.layers.0.mlp:input", hookpoint_out="model.layers.0.mlp",
        input_norm="scale", input_scale=1.7, output_scale=0.4, **extra, **fields,
    )  # fmt: skip
    torch.manual_seed(0)
    sae = REGISTRY[config.model_type][1](config)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn_like(p))  # W_skip, b_dec, b_enc away from their zero init
        if hasattr(sae, "threshold") and sae.threshold.dim() == 1:
            sae.threshold.fill_(0.05)
    return sae


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_skip_transcoder_output_is_the_hand_computation(name):
    sae = skip_transcoder(name).eval()
    x, y = torch.randn(5, D_IN), torch.randn(5, D_OUT)
    assert sae.W_dec.shape == (D_SAE, D_OUT) and sae.b_dec.shape == (D_OUT,) and sae.W_skip.shape == (D_IN, D_OUT)
    out = sae(x, target=y, compute_losses=True)
    f = sae.encode(x)  # the architecture's own features (checked in test_architectures)
    s_in, s_out = 1.7, 0.4
    y_hat_n = f @ sae.W_dec + sae.b_dec + (x * s_in) @ sae.W_skip
    torch.testing.assert_close(out.features, f)
    torch.testing.assert_close(out.reconstruction, y_hat_n / s_out)
    torch.testing.assert_close(out.losses["mse"], (y * s_out - y_hat_n).pow(2).sum(-1).mean())


@pytest.mark.parametrize("name", ["topk", "batchtopk", "matryoshka", "switch", "relu"])
def test_training_forward_loss_and_skip_gradient_match_the_hand_loss(name):
    """The training paths (TopK's sparse one included) compare with the target, and W_skip learns from it."""
    sae = skip_transcoder(name).train()
    x, y = torch.randn(16, D_IN), torch.randn(16, D_OUT)
    out = sae(x, target=y, dense_features=False)
    out.losses["mse"].backward()
    got = sae.W_skip.grad.clone()
    sae.zero_grad()
    f = out.features if out.features is not None else out.code.to_dense(D_SAE)
    y_hat_n = f.detach() @ sae.W_dec + sae.b_dec + (x * 1.7) @ sae.W_skip
    hand = (y * 0.4 - y_hat_n).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.losses["mse"], hand)
    hand.backward()
    torch.testing.assert_close(got, sae.W_skip.grad)
    assert got.abs().sum() > 0


def test_plain_transcoder_without_skip_has_no_w_skip_and_predicts_the_target():
    config = hubsae.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, hookpoint="a:input", hookpoint_out="a",
                                  subtract_b_dec=False)  # fmt: skip
    sae = hubsae.TopKSAE(config).eval()
    assert config.is_transcoder and config.write_hookpoint == "a" and "W_skip" not in sae.state_dict()
    x, y = torch.randn(4, D_IN), torch.randn(4, D_IN)
    out = sae(x, target=y, compute_losses=True)
    torch.testing.assert_close(out.losses["mse"], (y - sae.decode(sae.encode(x))).pow(2).sum(-1).mean())
    assert not hubsae.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, hookpoint="a").is_transcoder


def test_save_and_load_round_trip_keeps_w_skip_and_widths(tmp_path):
    sae = skip_transcoder("jumprelu").eval()
    sae.save_pretrained(tmp_path)
    back = AutoSAE.from_pretrained(tmp_path)
    assert back.config.d_out == D_OUT and back.config.skip_connection and back.config.output_scale == 0.4
    assert back.config.hookpoint_out == "model.layers.0.mlp"
    for key, value in sae.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value)
    x = torch.randn(3, D_IN)
    torch.testing.assert_close(back(x).reconstruction, sae(x).reconstruction)


def test_bad_transcoder_inputs_are_named():
    with pytest.raises(StrictDataclassClassValidationError, match="subtract_b_dec=True on a transcoder"):
        hubsae.TopKSAEConfig(d_in=4, d_sae=8, k=2, hookpoint="a:input", hookpoint_out="a")
    with pytest.raises(StrictDataclassClassValidationError, match="d_out must be positive"):
        hubsae.TopKSAEConfig(d_in=4, d_sae=8, k=2, d_out=0, subtract_b_dec=False)
    sae = skip_transcoder("topk")
    with pytest.raises(ValueError, match="need the written activation, forward"):
        sae(torch.randn(2, D_IN), compute_losses=True)
    with pytest.raises(ValueError, match=r"target has shape \(2, 6\), expected \(2, 10\)"):
        sae(torch.randn(2, D_IN), target=torch.randn(2, D_IN))


def test_an_architecture_whose_reconstruct_ignores_the_target_refuses_to_train_as_a_transcoder():
    config = hubsae.KronSAEConfig(d_in=8, d_sae=32, num_heads=4, m=2, n=4, k=4, hookpoint="a:input",
                                  hookpoint_out="a", subtract_b_dec=False)  # fmt: skip
    sae = hubsae.KronSAE(config)
    with pytest.raises(NotImplementedError, match="KronSAE.reconstruct takes no target="):
        sae(torch.randn(3, 8), target=torch.randn(3, 8))


def test_the_hub_index_records_where_a_transcoder_writes():
    from hubsae.hub import sae_entry

    entry = sae_entry(skip_transcoder("topk"))
    assert (entry["hookpoint"], entry["hookpoint_out"], entry["d_in"], entry["d_out"]) == (
        "model.layers.0.mlp:input", "model.layers.0.mlp", D_IN, D_OUT,
    )  # fmt: skip
    assert "hookpoint_out" not in sae_entry(hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=4, d_sae=8, k=2)))
