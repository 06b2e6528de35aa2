"""Interventions inside generate(): KV cache, left padding, positions, against an unpadded no-cache reference."""

import pytest
import torch
from tiny_models import LAYER1, topk_sae

import hubsae

NEW = 4
PROMPTS = [[5, 17, 33, 9, 61, 70], [44, 8, 90]]  # different lengths: the second row is left-padded


def left_padded(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def generate(model, **kw):
    ids, mask = left_padded(PROMPTS)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            **kw,
        )
    return out.sequences[:, ids.shape[1] :], torch.stack(out.logits, 1)  # (B, NEW), (B, NEW, V)


def edit_fn(kind, sae, feats):
    """The intervention as a plain function of the activation (independent of hubsae's hooks)."""
    unit = (sae.W_dec[feats] / sae.W_dec[feats].norm(dim=-1, keepdim=True)).detach()
    if kind == "steer":
        return lambda x: x + torch.tensor([3.0, -2.0]) @ unit
    if kind == "ablate":
        return lambda x: x - sae.encode(x)[..., feats] @ sae.W_dec[feats]
    return lambda x: x + (torch.tensor([2.0, 0.0]) - sae.encode(x)[..., feats]) @ sae.W_dec[feats]


def manager(kind, model, sae, feats, positions):
    if kind == "steer":
        return hubsae.steer(model, sae, dict(zip(feats, [3.0, -2.0], strict=True)), positions=positions)
    if kind == "ablate":
        return hubsae.ablate(model, sae, feats, positions=positions)
    return hubsae.clamp(model, sae, dict(zip(feats, [2.0, 0.0], strict=True)), positions=positions)


def reference_logits(model, module, edit, prompt, generated, positions):
    """Logits of one unpadded row, no cache, editing the positions by hand."""
    seq = torch.tensor([prompt + generated[:-1]])
    n = len(prompt)
    chosen = {"all": range(seq.shape[1]), "prompt": range(n), "generated": range(n - 1, seq.shape[1])}[positions]
    index = torch.tensor(list(chosen))

    def hook(m, args, out):
        x = out[0] if isinstance(out, tuple) else out
        x = x.clone()
        x[:, index] = edit(x[:, index])
        return (x, *out[1:]) if isinstance(out, tuple) else x

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(seq).logits[0, n - 1 :]
    finally:
        handle.remove()


def active_at_last_prompt_position(model, sae):
    """Two features, the strongest at the last prompt position of each row (so ablating them matters)."""
    ids, mask = left_padded(PROMPTS)
    with torch.no_grad(), hubsae.record(model, sae) as rec:
        model(ids, attention_mask=mask)
    dense = rec[sae].to_dense()[:, -1]
    first = int(dense[0].argmax())
    dense[1, first] = 0
    return [first, int(dense[1].argmax())]


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
@pytest.mark.parametrize("kind", ["steer", "ablate", "clamp"])
def test_generate_matches_unpadded_reference(model, family, kind, positions):
    hp = LAYER1[family]
    sae = topk_sae(hp, k=8)
    feats = active_at_last_prompt_position(model, sae)
    _, plain = generate(model)
    with manager(kind, model, sae, feats, positions):
        tokens, logits = generate(model)
    module = model.get_submodule(hp)
    for b, prompt in enumerate(PROMPTS):
        expected = reference_logits(model, module, edit_fn(kind, sae, feats), prompt, tokens[b].tolist(), positions)
        torch.testing.assert_close(logits[b], expected, rtol=1e-4, atol=1e-4)
    # the first generated token comes from the last prompt position: every mode edits it
    assert not torch.allclose(logits[:, 0], plain[:, 0], atol=1e-5)


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_cached_and_uncached_generation_agree(model, family, positions):
    sae = topk_sae(LAYER1[family])
    with (
        hubsae.steer(model, sae, {7: 2.0}, positions=positions),
        hubsae.ablate(model, sae, [1, 2], positions=positions),
    ):
        cached_tokens, cached = generate(model)
        uncached_tokens, uncached = generate(model, use_cache=False)
    assert torch.equal(cached_tokens, uncached_tokens)
    torch.testing.assert_close(cached, uncached, rtol=1e-4, atol=1e-4)


def test_record_and_splice_during_generate(model, family):
    hp = LAYER1[family]
    sae = topk_sae(hp)
    plain_tokens, plain = generate(model)
    with hubsae.record(model, sae, keep_activations=True) as rec, hubsae.splice(model, sae, keep_error=True):
        tokens, logits = generate(model)
    assert torch.equal(tokens, plain_tokens)
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
    assert len(rec.features[hp]) == NEW  # the prefill, then one call per new token but the last
    feats, x = rec[sae], rec.activation(sae)
    width = max(map(len, PROMPTS))
    assert feats.indices.shape == (len(PROMPTS), width + NEW - 1, sae.config.k)
    # each call's record is exactly that call's encode; one GEMM over all tokens rounds differently
    per_call = torch.cat([sae.encode(a) for a in rec.activations[hp]], dim=-2)
    assert torch.equal(feats.to_dense(), per_call)
    torch.testing.assert_close(feats.to_dense(), sae.encode(x), rtol=1e-5, atol=1e-6)
    ids, mask = left_padded(PROMPTS)
    full = torch.cat([ids, tokens[:, :-1]], 1)
    full_mask = torch.cat([mask, torch.ones_like(tokens[:, :-1])], 1)
    with torch.no_grad():
        positions = (full_mask.cumsum(-1) - 1).clamp_min(0)  # as generate() numbers left-padded rows
        hidden = model(full, attention_mask=full_mask, position_ids=positions, output_hidden_states=True)
        hidden = hidden.hidden_states[2]
    real = full_mask.bool()  # pad positions' activations are never attended to
    torch.testing.assert_close(x[real], hidden[real], rtol=1e-4, atol=1e-5)


def test_second_generate_in_the_same_block_starts_a_new_prompt(model, family):
    """Tracker state from one generate() must not leak into the next one inside the same `with`."""
    hp = LAYER1[family]
    sae = topk_sae(hp, k=8)
    feats = active_at_last_prompt_position(model, sae)
    module = model.get_submodule(hp)
    with manager("steer", model, sae, feats, "prompt"):
        generate(model)
        tokens, logits = generate(model)
    for b, prompt in enumerate(PROMPTS):
        expected = reference_logits(model, module, edit_fn("steer", sae, feats), prompt, tokens[b].tolist(), "prompt")
        torch.testing.assert_close(logits[b], expected, rtol=1e-4, atol=1e-4)


class _FakeCache:
    def __init__(self, n: int):
        self.n = n

    def get_seq_length(self) -> int:
        return self.n


@pytest.mark.parametrize(
    "kwargs",
    [
        {"past_key_values": _FakeCache(7)},  # transformers <= 5.23
        {"cache": _FakeCache(7)},  # transformers 5.24
        {"some_future_name": _FakeCache(7)},
        {"past_key_values": ((torch.zeros(1, 2, 7, 4), torch.zeros(1, 2, 7, 4)),)},  # legacy tuples
        {"cache_position": torch.arange(7, 9)},
        {"attention_mask": torch.ones(1, 9, dtype=torch.long)},  # nothing but the mask over cached + new
    ],
)
def test_cache_offset_is_read_from_every_convention(kwargs):
    from hubsae.hooks.attach import cache_offset

    assert cache_offset(kwargs, seq_len=2) == 7
    assert cache_offset({"attention_mask": torch.ones(1, 2)}, seq_len=2) == 0
    assert cache_offset({"past_key_values": _FakeCache(0)}, seq_len=2) == 0
