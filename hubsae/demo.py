"""Encode real text with an SAE on SmolLM2-135M-Instruct and print the top features per token."""

import argparse
import logging

import torch

from .models import SMOLLM2_NAME, load_smollm2
from .saes import TopKSAE, TopKSAEConfig

logger = logging.getLogger(__name__)

DEMO_TEXT = "The capital of France is Paris. In the beginning God created the heaven and the earth."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", type=int, default=15, help="residual stream after this decoder layer")
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--text", default=DEMO_TEXT)
    parser.add_argument("--top", type=int, default=3, help="features printed per token")


@torch.no_grad()
def run(args: argparse.Namespace) -> None:
    model, tokenizer = load_smollm2()
    hookpoint = f"model.layers.{args.layer}"
    config = TopKSAEConfig(
        d_in=model.config.hidden_size,
        d_sae=args.d_sae,
        k=args.k,
        hookpoint=hookpoint,
        base_model_name_or_path=SMOLLM2_NAME,
    )
    sae = TopKSAE(config).eval()
    inputs = tokenizer(args.text, return_tensors="pt")
    # hidden_states[i + 1] is the output of decoder layer i
    acts = model(**inputs, output_hidden_states=True).hidden_states[args.layer + 1][0]
    indices, values = sae.encode_sparse(acts)
    order = values.argsort(dim=-1, descending=True)[:, : args.top]
    tokens = tokenizer.convert_ids_to_tokens(inputs.input_ids[0])
    lines = [f"top {args.top} of {args.d_sae} features (k={args.k}) at {hookpoint}, untrained SAE:"]
    for pos, token in enumerate(tokens):
        feats = ", ".join(f"{int(indices[pos, j])}:{float(values[pos, j]):.2f}" for j in order[pos])
        lines.append(f"{token!r:>14}  {feats}")
    logger.info("\n".join(lines))
