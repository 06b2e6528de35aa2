"""Tiny random decoder-only models (Llama, GPT-2, Gemma 3, GPT-NeoX) and SAEs that read them.

The one place the test suite builds tiny models: every test folder imports it as `tiny_models`
(tests/ is on sys.path through tests/conftest.py; a unique module name, since `from conftest
import` would pick whichever conftest was imported last when several test folders run together).
"""

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from hubsae import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

WIDTH = 32
VOCAB = 128


def tiny_llama(vocab_size: int = VOCAB, seed: int | None = None, **overrides) -> LlamaForCausalLM:
    """Three layers of width 32 by default; `overrides` are LlamaConfig fields."""
    if seed is not None:
        torch.manual_seed(seed)
    fields = dict(
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(LlamaConfig(**{**fields, **overrides})).eval()


def tiny_llama_for(tokenizer, **overrides) -> LlamaForCausalLM:
    """Two layers over a real tokenizer (so token strings in eval tests are real text), seed 0."""
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=None)
    fields = {"num_hidden_layers": 2, "max_position_embeddings": 2048, **special, **overrides}
    return tiny_llama(len(tokenizer), seed=0, **fields)


def tiny_gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(
        n_embd=WIDTH,
        n_layer=3,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_gemma() -> Gemma3ForCausalLM:
    config = Gemma3TextConfig(
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        sliding_window=8,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return Gemma3ForCausalLM(config).eval()


def tiny_neox() -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPTNeoXForCausalLM(config).eval()


FAMILIES = {"llama": tiny_llama, "gpt2": tiny_gpt2, "gemma": tiny_gemma}
# the hookpoint of decoder layer 1's output in each family
LAYER1 = {"llama": "model.layers.1", "gpt2": "transformer.h.1", "gemma": "model.layers.1"}


def topk_sae(hookpoint: str | None, d_sae: int = 96, k: int = 6, seed: int = 1, **kw) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=WIDTH, d_sae=d_sae, k=k, hookpoint=hookpoint, **kw)).eval()
    with torch.no_grad():  # a nonzero b_enc/b_dec so that biases are exercised
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def jumprelu_sae(hookpoint: str | None, d_sae: int = 96, seed: int = 2) -> JumpReLUSAE:
    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=WIDTH, d_sae=d_sae, hookpoint=hookpoint, threshold_init=0.05)).eval()
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1)
    return sae


def token_batch(batch: int = 2, seq: int = 7, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, seq), generator=g)
