import pytest
import torch

from hubsae.data import Harvester


def _ids(tok, n=2, t=16):
    torch.manual_seed(1)
    return torch.randint(3, len(tok), (n, t))


def test_truncated_forward_equals_full_model_activations(tiny_lm):
    model, tok, _, _ = tiny_lm
    ids = _ids(tok)
    hookpoints = ["model.layers.0", "model.layers.1", "model.layers.1.mlp:input"]
    acts = Harvester(model, hookpoints)(ids)
    with torch.no_grad():
        full = model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["model.layers.0"], full[1], rtol=0, atol=0)
    torch.testing.assert_close(acts["model.layers.1"], full[2], rtol=0, atol=0)
    # the MLP input of layer 1 is the post-attention RMSNorm of its residual: check its shape and that it differs
    assert acts["model.layers.1.mlp:input"].shape == full[2].shape


def test_layers_after_the_deepest_hookpoint_do_not_run(tiny_lm):
    model, tok, _, _ = tiny_lm
    calls = []
    handle = model.model.layers[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        Harvester(model, ["model.layers.1"])(_ids(tok))
        assert calls == []
        model(_ids(tok))
        assert calls == [1]
    finally:
        handle.remove()


def test_hooks_are_removed_after_success_and_failure(tiny_lm):
    model, tok, _, _ = tiny_lm
    layer = model.model.layers[0]
    model(_ids(tok))  # transformers installs its own output-capturing hooks on first use
    before = dict(layer._forward_hooks)
    Harvester(model, ["model.layers.0"])(_ids(tok))
    assert dict(layer._forward_hooks) == before
    with pytest.raises(IndexError):
        Harvester(model, ["model.layers.0"])(torch.full((1, 4), 10_000))  # token id out of the vocabulary
    assert dict(layer._forward_hooks) == before


def test_bad_hookpoints_are_named(tiny_lm):
    model, _, _, _ = tiny_lm
    with pytest.raises(ValueError, match="model.layers.7"):
        Harvester(model, ["model.layers.7"])
    with pytest.raises(ValueError, match="duplicate"):
        Harvester(model, ["model.layers.0", "model.layers.0"])


def test_attention_input_read_from_hidden_states_kwarg(tiny_lm):
    """Llama calls self_attn(hidden_states=...): an `:input` hookpoint must read the kwarg, as record() does."""
    import hubsae

    model, tok, _, _ = tiny_lm
    ids = _ids(tok)
    hp = "model.layers.1.self_attn:input"
    acts = Harvester(model, [hp])(ids)
    with torch.no_grad():
        residual = model(ids, output_hidden_states=True).hidden_states[1]
        expected = model.model.layers[1].input_layernorm(residual)
    torch.testing.assert_close(acts[hp], expected, rtol=0, atol=0)
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=expected.shape[-1], d_sae=64, k=4, hookpoint=hp))
    with torch.no_grad(), hubsae.record(model, sae, keep_activations=True) as rec:
        model(ids)
    torch.testing.assert_close(rec.activation(sae), acts[hp], rtol=0, atol=0)
