"""record / splice / ablate / clamp / steer in a plain forward, each against an independent computation.

The reference runs the model with a hand-written hook that replaces the activation by the
expected one, computed from the SAE's dense `encode` and the decoder rows.
"""

import pytest
import torch
from tiny_models import LAYER1, WIDTH, jumprelu_sae, tiny_llama, token_batch, topk_sae

import hubsae
from hubsae.saes import REGISTRY

SAES = {
    "topk": topk_sae,
    "jumprelu": jumprelu_sae,
    "topk_scaled": lambda hp: topk_sae(hp, input_norm="scale", input_scale=2.5),
}


@pytest.fixture(params=list(SAES))
def sae_kind(request):
    return request.param


def clean_activation(model, hookpoint_module, ids):
    seen = []
    handle = hookpoint_module.register_forward_hook(
        lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.no_grad():
            logits = model(ids).logits
    finally:
        handle.remove()
    return seen[0], logits


def logits_with(model, module, replacement, ids):
    """Logits when the module's output is replaced by `replacement(output)` (the independent reference)."""

    def hook(m, args, out):
        if isinstance(out, tuple):
            return (replacement(out[0]), *out[1:])
        return replacement(out)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        handle.remove()


def model_units(sae, rows):
    """Decoder rows in the model's units (the 'scale' normalization divides reconstructions by input_scale)."""
    return rows / sae.config.input_scale if sae.config.input_norm == "scale" else rows


def frequent_features(sae, x, n=2):
    return sae.encode(x).ne(0).sum((0, 1)).argsort(descending=True)[:n].tolist()


def test_record_equals_encode(model, family, sae_kind):
    ids, hp = token_batch(), LAYER1[family]
    sae = SAES[sae_kind](hp)
    with torch.no_grad(), hubsae.record(model, sae, keep_activations=True) as rec:
        hidden = model(ids, output_hidden_states=True).hidden_states
    x = rec.activation(hp)
    assert torch.equal(x, hidden[2])  # decoder layer 1's output, bit for bit
    feats = rec[sae]
    assert torch.equal(feats.to_dense(), sae.encode(x))
    if sae_kind.startswith("topk"):
        assert feats.indices.shape == (*ids.shape, sae.config.k)
    idx, val = feats.active(0, 3)
    dense = sae.encode(x)[0, 3]
    assert set(idx.tolist()) == set(dense.nonzero().flatten().tolist()) and torch.equal(val, dense[idx])


def test_record_tuple_output_and_input_sites(model, family):
    ids = token_batch()
    attn = {"llama": "model.layers.0.self_attn", "gpt2": "transformer.h.0.attn", "gemma": "model.layers.0.self_attn"}
    names = [attn[family], LAYER1[family] + ":input", "blocks.2.hook_mlp_out"]
    saes = [topk_sae(n, seed=i) for i, n in enumerate(names)]
    with torch.no_grad(), hubsae.record(model, saes, keep_activations=True) as rec:
        hidden = model(ids, output_hidden_states=True).hidden_states
    assert torch.equal(rec.activation(names[1]), hidden[1])
    for name, sae in zip(names, saes, strict=True):
        assert torch.equal(rec[name].to_dense(), sae.encode(rec.activation(name)))


def test_splice(model, family, sae_kind):
    ids, hp = token_batch(), LAYER1[family]
    sae = SAES[sae_kind](hp)
    module = model.get_submodule(hp)
    _, clean = clean_activation(model, module, ids)
    with torch.no_grad():
        with hubsae.splice(model, sae, keep_error=True):
            kept = model(ids).logits
        with hubsae.splice(model, sae):
            spliced = model(ids).logits
        expected = logits_with(model, module, lambda x: sae(x).reconstruction, ids)
    torch.testing.assert_close(kept, clean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spliced, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(spliced, clean, atol=1e-3)


def test_splice_several_hookpoints(model, family):
    ids = token_batch()
    names = ["blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"]
    saes = [topk_sae(n, seed=i) for i, n in enumerate(names)]
    hps = [hubsae.hooks.resolve_hookpoint(model, n) for n in names]
    handles = [
        hp.module.register_forward_hook(
            lambda m, a, out, s=s: s(out[0] if isinstance(out, tuple) else out).reconstruction
        )
        for hp, s in zip(hps, saes, strict=True)
    ]
    try:
        with torch.no_grad():
            expected = model(ids).logits
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad(), hubsae.splice(model, saes):
        got = model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ablate(model, family, sae_kind):
    ids, hp = token_batch(), LAYER1[family]
    sae = SAES[sae_kind](hp)
    module = model.get_submodule(hp)
    x, _ = clean_activation(model, module, ids)
    feats = frequent_features(sae, x)
    with torch.no_grad(), hubsae.ablate(model, sae, feats):
        got = model(ids).logits

    def reference(out):
        f = sae.encode(out)
        return out - f[..., feats] @ model_units(sae, sae.W_dec[feats])

    expected = logits_with(model, module, reference, ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, model(ids).logits, atol=1e-4)


def test_clamp(model, family, sae_kind):
    ids, hp = token_batch(), LAYER1[family]
    sae = SAES[sae_kind](hp)
    module = model.get_submodule(hp)
    x, _ = clean_activation(model, module, ids)
    feats = frequent_features(sae, x) + [int(sae.encode(x).ne(0).sum((0, 1)).argmin())]  # one never active
    values = {feats[0]: 0.0, feats[1]: 3.0, feats[2]: -1.5}
    with torch.no_grad(), hubsae.clamp(model, sae, values):
        got = model(ids).logits

    def reference(out):
        f = sae.encode(out)
        pinned = torch.tensor(list(values.values())) - f[..., feats]
        return out + pinned @ model_units(sae, sae.W_dec[feats])

    torch.testing.assert_close(got, logits_with(model, module, reference, ids), rtol=1e-5, atol=1e-5)
    with torch.no_grad(), hubsae.clamp(model, sae, {feats[0]: 0.0, feats[1]: 0.0}):
        both = model(ids).logits
    with torch.no_grad(), hubsae.ablate(model, sae, feats[:2]):
        ablated = model(ids).logits
    torch.testing.assert_close(both, ablated, rtol=1e-5, atol=1e-5)  # clamping to 0 is ablating


def test_steer(model, family):
    ids, hp = token_batch(), LAYER1[family]
    sae = topk_sae(hp)
    module = model.get_submodule(hp)
    _, clean = clean_activation(model, module, ids)
    coefs = {5: 2.0, 17: -1.0}
    unit = sae.W_dec[[5, 17]] / sae.W_dec[[5, 17]].norm(dim=-1, keepdim=True)
    vector = (torch.tensor([2.0, -1.0]) @ unit).detach()
    with torch.no_grad():
        with hubsae.steer(model, sae, {5: 0.0}):
            zero = model(ids).logits
        with hubsae.steer(model, sae, coefs):
            got = model(ids).logits
        with hubsae.steer(model, sae, {5: 0.5}, relative=True):
            rel = model(ids).logits
    assert torch.equal(zero, clean)
    torch.testing.assert_close(got, logits_with(model, module, lambda x: x + vector, ids))
    expected_rel = logits_with(model, module, lambda x: x + 0.5 * x.norm(dim=-1, keepdim=True) * unit[0], ids)
    torch.testing.assert_close(rel, expected_rel)
    assert not torch.allclose(got, clean, atol=1e-3)


def test_composition_order(model, family):
    """Hooks at one module run in the order entered: a record inside a steer sees the steered activation."""
    ids, hp = token_batch(), LAYER1[family]
    sae = topk_sae(hp)
    with torch.no_grad():
        with hubsae.record(model, sae, keep_activations=True) as before, hubsae.steer(model, sae, {3: 4.0}):
            model(ids)
        with hubsae.steer(model, sae, {3: 4.0}), hubsae.record(model, sae, keep_activations=True) as after:
            model(ids)
    unit = (sae.W_dec[3] / sae.W_dec[3].norm()).detach()
    torch.testing.assert_close(after.activation(sae), before.activation(sae) + 4.0 * unit)


def all_hooks(model):
    return [
        (name, h)
        for name, m in model.named_modules()
        for h in (m._forward_hooks, m._forward_pre_hooks, m._forward_hooks_with_kwargs)
        if h
    ]


def test_hooks_removed_and_model_unchanged_after_errors(model, family):
    ids, hp = token_batch(), LAYER1[family]
    sae = topk_sae(hp)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        clean = model(ids).logits
        for manager in (
            hubsae.record(model, sae),
            hubsae.splice(model, sae),
            hubsae.ablate(model, sae, [1]),
            hubsae.clamp(model, sae, {1: 2.0}),
            hubsae.steer(model, sae, {1: 2.0}, positions="generated"),
        ):
            with pytest.raises(RuntimeError, match="boom"), manager:
                model(ids)
                raise RuntimeError("boom")
            assert not all_hooks(model)
        with pytest.raises(ValueError, match="out of range"), hubsae.ablate(model, sae, [sae.config.d_sae]):
            pass
        with (
            pytest.raises(ValueError, match="positions='middle'"),
            hubsae.steer(model, sae, {1: 1.0}, positions="middle"),
        ):
            pass
        assert not all_hooks(model)
        assert torch.equal(model(ids).logits, clean)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_positions_in_a_plain_forward(model, family):
    """In one forward (no cache) 'prompt' is every token and 'generated' only the last."""
    ids, hp = token_batch(), LAYER1[family]
    sae = topk_sae(hp)
    module = model.get_submodule(hp)
    unit = (sae.W_dec[9] / sae.W_dec[9].norm()).detach()

    def last_only(x):
        x = x.clone()
        x[:, -1] += 3.0 * unit
        return x

    with torch.no_grad():
        with hubsae.steer(model, sae, {9: 3.0}, positions="generated"):
            gen = model(ids).logits
        with hubsae.steer(model, sae, {9: 3.0}, positions="prompt"):
            prompt = model(ids).logits
        with hubsae.steer(model, sae, {9: 3.0}):
            everywhere = model(ids).logits
    torch.testing.assert_close(gen, logits_with(model, module, last_only, ids))
    torch.testing.assert_close(prompt, everywhere)


def registry_sae(model_type: str, hookpoint: str):
    """A tiny SAE of any registered architecture (sizes that KronSAE and SwitchSAE accept)."""
    config_cls = REGISTRY[model_type][0]
    kwargs = dict(d_in=WIDTH, d_sae=64, hookpoint=hookpoint)
    if "k" in config_cls.__dataclass_fields__:
        kwargs["k"] = 4
    kwargs.update(
        {"hubsae_kron": dict(num_heads=4, m=2, n=8), "hubsae_switch": dict(num_experts=4)}.get(model_type, {})
    )
    if "threshold_init" in config_cls.__dataclass_fields__:
        kwargs["threshold_init"] = 0.05
    torch.manual_seed(0)
    return hubsae.AutoSAE.from_config(config_cls(**kwargs)).eval()


@pytest.mark.parametrize("model_type", sorted(REGISTRY))
def test_every_architecture(model_type):
    """record, splice and ablate agree with each architecture's own encode / forward."""
    torch.manual_seed(0)
    model, ids, hp = tiny_llama(), token_batch(), "model.layers.1"
    sae = registry_sae(model_type, hp)
    module = model.get_submodule(hp)
    x, _ = clean_activation(model, module, ids)
    with torch.no_grad():
        if hasattr(sae, "threshold") and sae.threshold.dim() == 0:  # BatchTopK family: set a threshold
            sae.threshold.fill_(float(sae.pre_acts(x).quantile(0.9)))
        with hubsae.record(model, sae) as rec:
            model(ids)
        assert torch.equal(rec[sae].to_dense(), sae.encode(x))
        with hubsae.splice(model, sae):
            spliced = model(ids).logits
        torch.testing.assert_close(spliced, logits_with(model, module, lambda out: sae(out).reconstruction, ids))
        feats = frequent_features(sae, x)
        with hubsae.ablate(model, sae, feats):
            ablated = model(ids).logits
        reference = logits_with(model, module, lambda out: out - sae.encode(out)[..., feats] @ sae.W_dec[feats], ids)
    torch.testing.assert_close(ablated, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda m, s: hubsae.steer(m, s, {1.7: 3.0}), TypeError, r"integers, got \[1.7\]"),
        (lambda m, s: hubsae.steer(m, s, {True: 3.0}), TypeError, r"integers, got \[True\]"),
        (lambda m, s: hubsae.steer(m, s, {"3": 3.0}), TypeError, r"integers, got \['3'\]"),
        (lambda m, s: hubsae.ablate(m, s, torch.tensor([1.9])), TypeError, "integer tensor, got dtype torch.float32"),
        (lambda m, s: hubsae.ablate(m, s, torch.tensor([True])), TypeError, "integer tensor, got dtype torch.bool"),
        (lambda m, s: hubsae.steer(m, s, {1: float("nan")}), ValueError, "steering coefficients must be finite"),
        (lambda m, s: hubsae.steer(m, s, {1: float("inf")}), ValueError, "steering coefficients must be finite"),
        (lambda m, s: hubsae.clamp(m, s, {1: float("-inf")}), ValueError, "clamp values must be finite"),
        (lambda m, s: hubsae.clamp(m, s, {1: "2"}), TypeError, "clamp values must be real numbers"),
    ],
)
def test_bad_feature_indices_and_coefficients_are_refused(make, error, match):
    model = tiny_llama()
    sae = topk_sae(LAYER1["llama"])
    with pytest.raises(error, match=match), make(model, sae):
        pass
    assert not all_hooks(model)


def test_numpy_and_tensor_scalars_are_accepted_as_features():
    import numpy as np

    model = tiny_llama()
    sae = topk_sae(LAYER1["llama"])
    ids = token_batch()
    with torch.no_grad():
        with hubsae.steer(model, sae, {5: 2.0}):
            expected = model(ids).logits
        with hubsae.steer(model, sae, {np.int64(5): np.float32(2.0)}):
            assert torch.equal(model(ids).logits, expected)
        with hubsae.steer(model, sae, {torch.tensor(5): torch.tensor(2.0)}):
            assert torch.equal(model(ids).logits, expected)


def test_arguments_after_the_payload_are_keyword_only():
    """splice(model, sae, "model.layers.2") once bound the string to keep_error and did nothing."""
    model = tiny_llama()
    sae = topk_sae(LAYER1["llama"])
    for call in (
        lambda: hubsae.splice(model, sae, LAYER1["llama"]),
        lambda: hubsae.record(model, sae, LAYER1["llama"]),
        lambda: hubsae.ablate(model, sae, [1], LAYER1["llama"]),
        lambda: hubsae.clamp(model, sae, {1: 0.0}, LAYER1["llama"]),
        lambda: hubsae.steer(model, sae, {1: 0.0}, LAYER1["llama"]),
    ):
        with pytest.raises(TypeError, match="positional argument"):
            call()


def test_one_manager_object_can_be_entered_again_but_not_while_active():
    model = tiny_llama()
    sae = topk_sae(LAYER1["llama"])
    ids = token_batch()
    with torch.no_grad():
        clean = model(ids).logits
        manager = hubsae.steer(model, sae, {5: 2.0})
        with manager:
            first = model(ids).logits
        assert torch.equal(model(ids).logits, clean)
        with manager:
            assert torch.equal(model(ids).logits, first)
            with pytest.raises(RuntimeError, match=r"hubsae.steer\(...\) is already active"), manager:
                pass
            assert torch.equal(model(ids).logits, first)  # the failed re-entry added no second hook
        assert not all_hooks(model)
        recorder = hubsae.record(model, sae)
        for _ in range(2):
            with recorder as rec:
                model(ids)
            assert rec[sae].indices.shape[:2] == ids.shape
