"""LoRA adaptation around a frozen SAE, and every intervention on PEFT-wrapped models."""

import copy

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from peft import LoraConfig, get_peft_model
from tiny_models import LAYER1, tiny_llama, token_batch, topk_sae

import hubsae
from hubsae.adapt import LoRAAdaptConfig, adapt_lora, load_adapted, lora_target_modules, save_adapted, spliced_loss
from hubsae.hooks import resolve_hookpoint

LLAMA_LAYER1 = LAYER1["llama"]


def _kl(model, sae, batches) -> float:
    with torch.no_grad():
        return sum(spliced_loss(model, sae, ids, None, "kl").item() for ids in batches) / len(batches)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = tiny_llama()
    sae = topk_sae(LLAMA_LAYER1, k=4)
    batches = [token_batch(4, 16, seed=s) for s in range(4)]
    return model, sae, batches


def test_lora_lowers_spliced_kl_and_changes_only_adapters(setup):
    model, sae, batches = setup
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    sae_before = {k: v.clone() for k, v in sae.state_dict().items()}
    config = LoRAAdaptConfig(r=4, alpha=8, steps=40, lr=3e-3)
    peft_model, history = adapt_lora(model, sae, batches, config)
    # the KL of the untrained adapters (B = 0 at init) is the spliced model's own KL
    kl_start = history[0]
    kl_end = _kl(peft_model, sae, batches)
    assert kl_end < 0.7 * kl_start, (kl_start, kl_end)
    for name, value in sae.state_dict().items():
        assert torch.equal(value, sae_before[name]), name
    base_after = peft_model.get_base_model().state_dict()
    changed = [k for k in base_after if "lora_" in k]
    assert changed, "no adapter weights"
    for name, value in base_before.items():
        key = name if name in base_after else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(base_after[key], value), name
    assert all(p.requires_grad for p in sae.parameters())  # restored after training


def test_after_layers_only_adapts_later_layers(setup):
    model, sae, _ = setup
    names = lora_target_modules(model, sae, LoRAAdaptConfig(layers="after"))
    assert names and all(n.startswith("model.layers.2.") for n in names)  # the SAE reads layer 1's output
    every = lora_target_modules(model, sae, LoRAAdaptConfig(module_names=["q_proj"]))
    assert every == [f"model.layers.{i}.self_attn.q_proj" for i in range(3)]


def test_save_load_round_trip(setup, tmp_path):
    model, sae, batches = setup
    fresh = copy.deepcopy(model)
    peft_model, _ = adapt_lora(model, sae, batches, LoRAAdaptConfig(r=4, steps=5, lr=1e-2))
    save_adapted(peft_model, [sae], tmp_path)
    assert (tmp_path / "lora_adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / LLAMA_LAYER1 / "config.json").is_file()
    loaded, saes = load_adapted(fresh, tmp_path)
    assert list(saes) == [LLAMA_LAYER1]
    ids = batches[0]
    with torch.no_grad(), hubsae.splice(peft_model, sae):
        want = peft_model(input_ids=ids).logits
    with torch.no_grad(), hubsae.splice(loaded, saes[LLAMA_LAYER1]):
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, want)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapted(copy.deepcopy(fresh), tmp_path / LLAMA_LAYER1)


def test_bad_config():
    with pytest.raises(StrictDataclassError, match="objective"):
        LoRAAdaptConfig(objective="mse")
    with pytest.raises(StrictDataclassError, match="layers"):
        LoRAAdaptConfig(layers="before")


def _run_with_delta(model, delta, ids):
    """Logits with `delta` added to layer 1's output by a hand-written hook."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    handle = resolve_hookpoint(model, LLAMA_LAYER1).module.register_forward_hook(hook)
    try:
        return model(input_ids=ids).logits
    finally:
        handle.remove()


@pytest.mark.parametrize("merged", [False, True])
def test_every_intervention_on_a_peft_model(merged):
    torch.manual_seed(0)
    model = tiny_llama()
    lora = LoraConfig(r=4, target_modules=["q_proj", "up_proj", "down_proj"], init_lora_weights=False)
    wrapped = get_peft_model(model, lora)
    if merged:
        wrapped = wrapped.merge_and_unload()
    sae = topk_sae(LLAMA_LAYER1, k=4)
    ids = token_batch(2, 9)
    assert (
        resolve_hookpoint(wrapped, LLAMA_LAYER1).module is resolve_hookpoint(wrapped, "blocks.1.hook_resid_post").module
    )
    with torch.no_grad():
        clean = wrapped(input_ids=ids, output_hidden_states=True)
        acts = clean.hidden_states[2]  # output of layer 1
        with hubsae.record(wrapped, sae) as rec:
            wrapped(input_ids=ids)
        torch.testing.assert_close(rec[sae].to_dense(), sae.encode(acts))
        with hubsae.splice(wrapped, sae, keep_error=True):
            torch.testing.assert_close(wrapped(input_ids=ids).logits, clean.logits, rtol=1e-4, atol=1e-5)
        with hubsae.steer(wrapped, sae, {3: 0.0}):
            torch.testing.assert_close(wrapped(input_ids=ids).logits, clean.logits)
        feature = int(sae.encode(acts)[0, -1].argmax())
        removed = sae.encode(acts)[..., feature : feature + 1] * sae.W_dec[feature]
        with hubsae.ablate(wrapped, sae, [feature]):
            ablated = wrapped(input_ids=ids).logits
        torch.testing.assert_close(ablated, _run_with_delta(wrapped, -removed, ids), rtol=1e-4, atol=1e-5)
        with hubsae.clamp(wrapped, sae, {feature: 5.0}):
            clamped = wrapped(input_ids=ids).logits
        assert not torch.allclose(clamped, clean.logits)
    after_logits = wrapped(input_ids=ids).logits
    torch.testing.assert_close(after_logits, clean.logits, rtol=0, atol=0)


@pytest.mark.parametrize("merged", [False, True])
def test_training_activations_from_a_peft_model(merged):
    """The training harvest reads the adapted model's activations, through the wrapper or merged."""
    from hubsae.data import Harvester

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "up_proj"], init_lora_weights=False)
    wrapped = get_peft_model(tiny_llama(), lora)
    model = wrapped.merge_and_unload() if merged else wrapped
    ids = token_batch(2, 9)
    with torch.no_grad():
        want = model(input_ids=ids, output_hidden_states=True).hidden_states[2]
        got = Harvester(model, ["blocks.1.hook_resid_post"])(ids)["blocks.1.hook_resid_post"]
    torch.testing.assert_close(got, want)
