"""End to end on the real SmolLM2-135M-Instruct: steered generate(), and the model unchanged afterwards."""

import hashlib

import pytest
import torch

import hubsae
from hubsae.llm import load_smollm2

pytestmark = pytest.mark.slow


def digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_steered_generation_on_smollm2():
    model, tokenizer = load_smollm2()
    tokenizer.padding_side = "left"
    inputs = tokenizer(
        ["The capital of France is", "My favourite food is pizza because"], return_tensors="pt", padding=True
    )
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    torch.manual_seed(0)
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=576, d_sae=1152, k=16, hookpoint="blocks.15.hook_resid_post"))
    before = digest(model)
    with torch.no_grad():
        plain = model.generate(**inputs, **kwargs)
        with hubsae.steer(model, sae, {42: 2.0}, positions="generated", relative=True):
            steered = model.generate(**inputs, **kwargs)
        again = model.generate(**inputs, **kwargs)
    prompt_len = inputs.input_ids.shape[1]
    assert torch.equal(steered[:, :prompt_len], inputs.input_ids)
    for row in range(2):  # every row's continuation changes, from the first generated token on
        assert steered[row, prompt_len] != plain[row, prompt_len], tokenizer.decode(steered[row])
    assert torch.equal(again, plain)
    assert digest(model) == before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_steer_command(tmp_path, caplog):
    from hubsae.cli import main

    torch.manual_seed(0)
    config = hubsae.TopKSAEConfig(d_in=576, d_sae=1152, k=16, hookpoint="model.layers.15")
    hubsae.TopKSAE(config).save_pretrained(tmp_path / "sae")
    with caplog.at_level("INFO"):
        main(["steer", str(tmp_path / "sae"), "--feature", "42=2", "--relative", "--max-new-tokens", "3"])
    out = caplog.text
    plain = out.split("plain:")[1].split("\n")[0].strip()
    steered = out.split("steered:")[1].split("\n")[0].strip()
    assert "steering {42: 2.0} x ||x|| at model.layers.15" in out
    assert plain and steered and plain != steered


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_cached_steering_matches_uncached_reference_on_smollm2(positions):
    """Cached, left-padded generate() under steer equals a hand-edited, unpadded, uncached forward per row."""
    from test_generate import reference_logits

    model, tokenizer = load_smollm2()
    tokenizer.padding_side = "left"
    prompts = ["The capital of France is", "My favourite food is pizza because"]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    hp = "model.layers.6"
    sae = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=576, d_sae=1152, k=16, hookpoint=hp))
    unit = sae.W_dec[42] / sae.W_dec[42].norm()
    with torch.no_grad(), hubsae.steer(model, sae, {42: 8.0}, positions=positions):
        out = model.generate(
            **inputs,
            max_new_tokens=4,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    new = out.sequences[:, inputs.input_ids.shape[1] :]
    logits = torch.stack(out.logits, 1)
    for b, prompt in enumerate(prompts):
        ids = tokenizer(prompt).input_ids
        expected = reference_logits(
            model, model.get_submodule(hp), lambda x: x + 8.0 * unit.detach(), ids, new[b].tolist(), positions
        )
        torch.testing.assert_close(logits[b], expected, rtol=1e-3, atol=1e-3)
