"""A tiny random Llama over SmolLM2's real tokenizer, so token strings in eval tests are real text."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(tokenizer, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **overrides,
    )
    return LlamaForCausalLM(cfg).eval()
