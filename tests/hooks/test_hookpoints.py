"""Hookpoint resolution: module paths, :input, TransformerLens and sparsify names, PEFT, device_map, errors."""

import pytest
import torch
from tiny_models import WIDTH, tiny_gemma, tiny_gpt2, tiny_llama, tiny_neox, token_batch, topk_sae
from torch import nn

import hubsae
from hubsae.hooks import activation_width, layer_list, resolve_hookpoint

TRANSLATIONS = {
    tiny_llama: {
        "blocks.1.hook_resid_pre": "model.layers.1:input",
        "blocks.1.hook_resid_mid": "model.layers.1.post_attention_layernorm:input",
        "blocks.1.hook_resid_post": "model.layers.1",
        "blocks.1.hook_attn_out": "model.layers.1.self_attn",
        "blocks.1.hook_mlp_out": "model.layers.1.mlp",
        "layers.1": "model.layers.1",
        "layers.1.mlp": "model.layers.1.mlp",
        "model.layers.2.self_attn:input": "model.layers.2.self_attn:input",
    },
    tiny_gemma: {
        "blocks.2.hook_resid_pre": "model.layers.2:input",
        "blocks.2.hook_resid_mid": "model.layers.2.pre_feedforward_layernorm:input",
        "blocks.2.hook_attn_out": "model.layers.2.post_attention_layernorm",
        "blocks.2.hook_mlp_out": "model.layers.2.post_feedforward_layernorm",
        "layers.0": "model.layers.0",
    },
    tiny_gpt2: {
        "blocks.0.hook_resid_pre": "transformer.h.0:input",
        "blocks.0.hook_resid_mid": "transformer.h.0.ln_2:input",
        "blocks.0.hook_resid_post": "transformer.h.0",
        "blocks.0.hook_attn_out": "transformer.h.0.attn",
        "blocks.0.hook_mlp_out": "transformer.h.0.mlp",
        "h.0": "transformer.h.0",
        "layers.0": "transformer.h.0",
        "layers.0.mlp": "transformer.h.0.mlp",
    },
    tiny_neox: {
        "blocks.1.hook_resid_pre": "gpt_neox.layers.1:input",
        "blocks.1.hook_resid_post": "gpt_neox.layers.1",
        "blocks.1.hook_attn_out": "gpt_neox.layers.1.attention",
        "blocks.1.hook_mlp_out": "gpt_neox.layers.1.mlp",
        "layers.1": "gpt_neox.layers.1",
    },
}


def tiny_family(config_name: str, model_name: str, **extra):
    """A tiny random model of another Llama-like family (Mistral, Qwen 2, Gemma 1 and 2)."""
    import transformers

    def make():
        config = getattr(transformers, config_name)(
            hidden_size=WIDTH,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
            **extra,
        )
        return getattr(transformers, model_name)(config).eval()

    make.__name__ = model_name
    return make


LLAMA_LIKE = {
    "blocks.1.hook_resid_mid": "model.layers.1.post_attention_layernorm:input",
    "blocks.1.hook_attn_out": "model.layers.1.self_attn",
    "blocks.1.hook_mlp_out": "model.layers.1.mlp",
    "layers.1": "model.layers.1",
}
TRANSLATIONS[tiny_family("MistralConfig", "MistralForCausalLM")] = LLAMA_LIKE
TRANSLATIONS[tiny_family("Qwen2Config", "Qwen2ForCausalLM")] = LLAMA_LIKE
TRANSLATIONS[tiny_family("GemmaConfig", "GemmaForCausalLM", head_dim=8)] = LLAMA_LIKE
TRANSLATIONS[tiny_family("Gemma2Config", "Gemma2ForCausalLM", head_dim=8)] = {
    "blocks.1.hook_resid_mid": "model.layers.1.pre_feedforward_layernorm:input",
    "blocks.1.hook_attn_out": "model.layers.1.post_attention_layernorm",
    "blocks.1.hook_mlp_out": "model.layers.1.post_feedforward_layernorm",
}


@pytest.mark.parametrize("make", list(TRANSLATIONS), ids=lambda f: f.__name__)
def test_translations(make):
    model = make()
    for name, expected in TRANSLATIONS[make].items():
        hp = resolve_hookpoint(model, name)
        path, _, site = expected.partition(":")
        assert hp.name == expected, name
        assert hp.module is model.get_submodule(path)
        assert hp.site == ("input" if site else "output")
        assert activation_width(model, hp) == WIDTH


@pytest.mark.parametrize("make", list(TRANSLATIONS), ids=lambda f: f.__name__)
def test_tl_names_read_what_transformer_lens_reads(make):
    """The translated names satisfy the residual identities: pre + attn = mid, mid + mlp = post
    (pre + attn + mlp = post for a parallel residual)."""
    torch.manual_seed(0)
    model, ids = make(), token_batch()
    parallel = getattr(model.config, "use_parallel_residual", False)
    hooks = ("resid_pre", "resid_post", "attn_out", "mlp_out") + (() if parallel else ("resid_mid",))
    names = [f"blocks.1.hook_{h}" for h in hooks]
    with torch.no_grad(), hubsae.record(model, {n: topk_sae(n) for n in names}, keep_activations=True) as rec:
        hidden = model(ids, output_hidden_states=True).hidden_states
    pre, post, attn, mlp = (rec.activation(n) for n in names[:4])
    assert torch.equal(pre, hidden[1]) and torch.equal(post, hidden[2])
    if parallel:
        torch.testing.assert_close(pre + attn + mlp, post)
    else:
        mid = rec.activation(names[4])
        torch.testing.assert_close(pre + attn, mid)
        torch.testing.assert_close(mid + mlp, post)


def test_errors_name_the_problem():
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"'model.layers.1.mlpp'.*close module names.*model.layers.1.mlp"):
        resolve_hookpoint(model, "model.layers.1.mlpp")
    with pytest.raises(ValueError, match="has 3 decoder layers"):
        resolve_hookpoint(model, "blocks.7.hook_resid_post")
    with pytest.raises(ValueError, match="parallel residual"):
        resolve_hookpoint(tiny_neox(), "blocks.0.hook_resid_mid")
    with pytest.raises(ValueError, match="ambiguous.*model.layers.0.mlp"):
        resolve_hookpoint(model, "mlp")


def test_ambiguous_relative_name_in_a_two_tower_model():
    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.text, self.vision = tiny_llama().model, tiny_llama().model

    with pytest.raises(ValueError, match=r"ambiguous.*text.layers.0.*vision.layers.0"):
        resolve_hookpoint(TwoTowers(), "layers.0")


def test_width_mismatch_fails_before_any_forward():
    model = tiny_llama()
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    wrong = hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=WIDTH + 1, d_sae=64, k=4, hookpoint="model.layers.1"))
    for manager in (
        lambda: hubsae.record(model, wrong),
        lambda: hubsae.splice(model, wrong),
        lambda: hubsae.steer(model, wrong, {0: 1.0}),
        lambda: hubsae.ablate(model, wrong, [0], hookpoint="model.layers.1.mlp"),
        lambda: hubsae.clamp(model, wrong, {0: 1.0}, hookpoint="model.layers.1.self_attn:input"),
    ):
        with pytest.raises(ValueError, match=r"d_in=33 but the activation at hookpoint 'model.layers.1.*width 32"):
            with manager():
                model(token_batch())
    assert not calls
    # an intermediate activation: the MLP's down projection reads 64 features
    assert activation_width(model, resolve_hookpoint(model, "model.layers.1.mlp.down_proj:input")) == 64
    with pytest.raises(ValueError, match="no config.hookpoint"):
        hubsae.record(model, topk_sae(None)).__enter__()


def test_layer_list():
    assert layer_list(tiny_gpt2())[0] == "transformer.h"
    assert layer_list(tiny_gemma())[0] == "model.layers"


def test_peft_wrapped_model():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model, ids = tiny_llama(), token_batch()
    with torch.no_grad():
        clean = model(ids, output_hidden_states=True).hidden_states[2]
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    )
    hp = resolve_hookpoint(lora, "base_model.model.model.layers.1")
    assert hp.name == "model.layers.1" and hp.module is lora.get_base_model().model.layers[1]
    hp_mlp = resolve_hookpoint(lora, "blocks.1.hook_mlp_out")
    assert activation_width(lora, hp_mlp) == WIDTH  # through the LoRA-wrapped down_proj
    sae = topk_sae("model.layers.1")
    with torch.no_grad(), hubsae.record(lora, sae, keep_activations=True) as rec:
        expected = lora(input_ids=ids, output_hidden_states=True).hidden_states[2]
    assert torch.equal(rec.activation(sae), expected)
    assert not torch.equal(expected, clean)  # the adapter is active and the hook saw its effect
    assert torch.equal(rec[sae].to_dense(), sae.encode(expected))


def test_device_map_model_with_disk_offload(tmp_path):
    torch.manual_seed(0)
    tiny_llama().save_pretrained(tmp_path / "m")
    from transformers import AutoModelForCausalLM

    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk"}
    device_map |= {"model.layers.2": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", device_map=device_map, offload_folder=tmp_path / "off")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids, sae = token_batch(), topk_sae("blocks.1.hook_resid_post")
    with torch.no_grad():
        expected = reference(ids).logits
        with hubsae.record(model, sae, keep_activations=True) as rec, hubsae.splice(model, sae, keep_error=True):
            spliced = model(ids).logits
        hidden = reference(ids, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(spliced, expected)
    assert torch.equal(rec.activation(sae), hidden)
