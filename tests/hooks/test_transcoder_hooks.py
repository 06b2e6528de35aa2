"""Interventions with transcoders on a tiny Llama: read `model.layers.L.mlp:input`, write `model.layers.L.mlp`."""

import pytest
import torch
from tiny_models import tiny_llama, token_batch, topk_sae

import hubsae
from hubsae.hooks.attach import add_hook, hooks_removed
from hubsae.hooks.capture import capture
from hubsae.hooks.hookpoints import resolve_hookpoint


def transcoder(layer: int = 0, seed: int = 1, skip: bool = True):
    sae = topk_sae(f"model.layers.{layer}.mlp:input", k=6, seed=seed, hookpoint_out=f"model.layers.{layer}.mlp",
                   subtract_b_dec=False, skip_connection=skip)  # fmt: skip
    if skip:
        with torch.no_grad():
            sae.W_skip.normal_(0, 0.2)
    return sae


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def mlp_io(model, ids, layer: int = 0):
    names = [f"model.layers.{layer}.mlp:input", f"model.layers.{layer}.mlp"]
    with torch.no_grad():
        acts = capture(model, names, lambda: model(input_ids=ids, use_cache=False))[1]
    return acts[names[0]], acts[names[1]]


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return tiny_llama(), token_batch()


def test_splice_with_error_reproduces_the_clean_logits(setup):
    model, ids = setup
    clean = logits(model, ids)
    with hubsae.splice(model, [transcoder(0), transcoder(1, seed=2)], keep_error=True):
        spliced = logits(model, ids)
    torch.testing.assert_close(spliced, clean, rtol=1e-5, atol=1e-5)


def test_splice_without_error_writes_the_transcoder_output_at_the_mlp(setup):
    model, ids = setup
    sae = transcoder(0)
    clean = logits(model, ids)
    x, _ = mlp_io(model, ids)
    y_hat = sae(x).reconstruction  # y_hat = f W_dec + b_dec + x W_skip (checked in tests/saes)
    handles = []
    with hooks_removed(handles):  # an independent replacement: plain hook at the MLP's output
        handles.append(add_hook(resolve_hookpoint(model, "model.layers.0.mlp"), lambda y: y_hat))
        by_hand = logits(model, ids)
    with hubsae.splice(model, sae):
        spliced = logits(model, ids)
        _, written = mlp_io(model, ids)
    torch.testing.assert_close(written, y_hat)
    torch.testing.assert_close(spliced, by_hand, rtol=1e-5, atol=1e-5)
    assert (spliced - clean).abs().max() > 1e-3


def test_ablate_changes_the_write_point_by_the_decoder_row_times_the_activation(setup):
    model, ids = setup
    sae = transcoder(0)
    x, y = mlp_io(model, ids)
    f = sae.encode(x)
    i = int(f.reshape(-1, f.shape[-1]).ne(0).sum(0).argmax())  # the latent firing most often
    assert f[..., i].ne(0).any()
    with hubsae.ablate(model, sae, [i]):
        x_ablated, y_ablated = mlp_io(model, ids)
    torch.testing.assert_close(x_ablated, x)  # the read point upstream is untouched
    torch.testing.assert_close(y_ablated - y, -f[..., i, None] * sae.W_dec[i], rtol=1e-5, atol=1e-6)


def test_clamp_steer_and_record_act_on_transcoder_features(setup):
    model, ids = setup
    sae = transcoder(0)
    x, y = mlp_io(model, ids)
    f = sae.encode(x)
    with hubsae.clamp(model, sae, {3: 2.5}):
        y_clamped = mlp_io(model, ids)[1]
    torch.testing.assert_close(y_clamped - y, (2.5 - f[..., 3, None]) * sae.W_dec[3], rtol=1e-5, atol=1e-6)
    with hubsae.steer(model, sae, {5: 4.0}):
        y_steered = mlp_io(model, ids)[1]
    u = sae.W_dec[5] / sae.W_dec[5].norm()
    torch.testing.assert_close(y_steered - y, (4.0 * u).expand_as(y), rtol=1e-5, atol=1e-6)
    with hubsae.record(model, sae) as rec:
        logits(model, ids)
    torch.testing.assert_close(rec[sae].to_dense(), f)


def test_read_clean_feeds_clean_inputs_replaced_feeds_the_replaced_ones(setup):
    model, ids = setup
    first, second = transcoder(0), transcoder(1, seed=2)
    x1_clean, _ = mlp_io(model, ids, layer=1)
    for read in ("replaced", "clean"):
        with hubsae.splice(model, [first, second], read=read):
            x1, y1 = mlp_io(model, ids, layer=1)
        assert (x1 - x1_clean).abs().max() > 1e-4  # layer 0's replacement reached layer 1's MLP input
        torch.testing.assert_close(y1, second(x1_clean if read == "clean" else x1).reconstruction)


def test_read_clean_with_error_freezes_each_mlp_at_its_clean_output(setup):
    model, ids = setup
    with hubsae.steer(model, transcoder(0), {1: 3.0}):  # an outer edit the clean pass still sees
        steered = logits(model, ids)
        with hubsae.splice(model, [transcoder(0), transcoder(1, seed=2)], keep_error=True, read="clean"):
            both = logits(model, ids)
    torch.testing.assert_close(both, steered, rtol=1e-5, atol=1e-5)


def test_transcoder_mistakes_are_named(setup):
    model, ids = setup
    backwards = topk_sae("model.layers.1.mlp:input", hookpoint_out="model.layers.0.mlp", subtract_b_dec=False)
    with pytest.raises(RuntimeError, match="read point must run before its write point"):
        with hubsae.splice(model, backwards):
            logits(model, ids)
    with pytest.raises(ValueError, match="read="):
        hubsae.splice(model, transcoder(0), read="fresh").__enter__()
    wide = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=32, d_out=48, d_sae=64, k=4, subtract_b_dec=False,
                                               hookpoint="model.layers.0.mlp:input"))  # fmt: skip
    with pytest.raises(ValueError, match="pass hookpoint_out="):
        hubsae.splice(model, wide).__enter__()
    with pytest.raises(ValueError, match="d_out=48 but the activation at its write point"):
        hubsae.splice(model, wide, hookpoint_out="model.layers.0.mlp").__enter__()
