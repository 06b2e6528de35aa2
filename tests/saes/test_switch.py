"""Switch SAE: routing, gated per-expert TopK, load balancing, per-expert encoder cost."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch.utils.flop_counter import FlopCounterMode

import hubsae


def make(**kw):
    cfg = dict(d_in=8, d_sae=48, k=3, num_experts=4)
    cfg.update(kw)
    return hubsae.SwitchSAE(hubsae.SwitchSAEConfig(**cfg))


def reference_features(sae, x):
    """Dense computation of every expert, then the router's choice (the official code's way)."""
    probs = torch.softmax((x - sae.b_router) @ sae.W_router, -1)
    expert = probs.argmax(-1)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc  # (T, F): all experts
    out = torch.zeros_like(pre)
    for t in range(x.shape[0]):
        block = slice(int(expert[t]) * 12, (int(expert[t]) + 1) * 12)
        vals, idx = pre[t, block].topk(3)
        out[t, block] = torch.zeros(12).scatter(0, idx, torch.relu(vals)) * probs[t, expert[t]]
    return out, probs, expert


def test_features_are_the_gated_topk_of_the_routed_expert():
    sae = make().eval()
    x = torch.randn(40, 8)
    ref, _, expert = reference_features(sae, x)
    assert len(set(expert.tolist())) > 1  # the check covers several experts
    f = sae.encode(x)
    torch.testing.assert_close(f, ref)
    torch.testing.assert_close(sae(x).reconstruction, ref @ sae.W_dec + sae.b_dec)
    idx, vals = sae.encode_sparse(x.reshape(5, 8, 8))
    assert idx.shape == (5, 8, 3)
    assert ((idx // 12) == expert.reshape(5, 8, 1)).all()
    with pytest.raises(NotImplementedError, match="SwitchSAE has no dense activation"):
        sae.activation(sae.pre_acts(x))


def test_load_balance_loss_and_total_loss():
    sae = make().train()
    x = torch.randn(64, 8)
    out = sae(x)
    _, probs, expert = reference_features(sae, x)
    frac = torch.bincount(expert, minlength=4).float() / 64
    lb = 4 * (frac * probs.mean(0)).sum()
    torch.testing.assert_close(out.losses["load_balance"], lb)
    torch.testing.assert_close(out.loss, out.losses["mse"] + 0.01 * 8 * lb)  # lb_coefficient * d_in, AuxK weight 0
    uniform = sae.load_balance_loss(torch.full((8, 4), 0.25), torch.arange(8) % 4)
    assert uniform.item() == pytest.approx(1.0)
    collapsed = sae.load_balance_loss(torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 8), torch.zeros(8, dtype=torch.long))
    assert collapsed.item() == pytest.approx(4 * 0.7)


def test_router_gets_gradients_from_reconstruction_and_balance():
    sae = make().train()
    out = sae(torch.randn(64, 8))
    torch.autograd.backward(out.losses["mse"], inputs=[sae.W_router])
    assert sae.W_router.grad.abs().sum() > 0
    sae.W_router.grad = None
    out = sae(torch.randn(64, 8))
    torch.autograd.backward(out.losses["load_balance"], inputs=[sae.W_router])
    assert sae.W_router.grad.abs().sum() > 0


def test_encoder_cost_is_one_expert_per_token():
    sae = make(d_in=32, d_sae=256, k=4, num_experts=8).eval()
    tokens = 50
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sae.encode_sparse(torch.randn(tokens, 32))
    router = 2 * tokens * 32 * 8
    assert counter.get_total_flops() == router + 2 * tokens * 32 * 256 // 8


@pytest.mark.parametrize(
    "kw,match", [({"num_experts": 5}, "multiple of num_experts=5"), ({"k": 13}, "k=13 exceeds the expert size")]
)
def test_bad_sizes_raise(kw, match):
    with pytest.raises(StrictDataclassClassValidationError, match=match):
        hubsae.SwitchSAEConfig(**{**dict(d_in=8, d_sae=48, k=3, num_experts=4), **kw})
