"""Evaluate SAEs on held-out text: MSE, three FVU variants, L0, dead/dense latents, CE loss clean /
spliced / zero-ablated, CE recovered, KL, decoder cosine. Writes eval.json, eval.md, density PNGs."""

import argparse
import logging

import torch

from ..auto import AutoSAE
from ..eval.lm import evaluate
from ..eval.report import metrics_table, text_contexts, write_report

logger = logging.getLogger(__name__)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the option in its error)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def add_model_and_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments `hubsae eval` and `hubsae browse` share."""
    parser.add_argument("--subfolder", default=None, help="subfolder of every SAE path (e.g. model.layers.15)")
    parser.add_argument("--model", default=None, help="causal LM name or folder; default: the embedded SmolLM2")
    parser.add_argument(
        "--data", required=True, help="held-out text: a file, a folder, corpus:NAME or hf:NAME (see hubsae.data)"
    )
    parser.add_argument(
        "--skip-contexts", type=non_negative_int, default=0, help="drop this many contexts first (training data)"
    )
    parser.add_argument("--context-length", type=positive_int, default=128)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("saes", nargs="+", help="SAE folders or Hub repos (hubsae or a supported outside format)")
    add_model_and_data_arguments(parser)
    parser.add_argument("--max-contexts", type=positive_int, default=64, help="contexts to evaluate on")
    parser.add_argument("--out", default="eval", help="output folder for eval.json, eval.md and the PNGs")


def load_model_and_saes(args: argparse.Namespace):
    """(model, tokenizer, saes) on `args.device`, the model in eval mode."""
    from ..llm import load_causal_lm

    model, tokenizer = load_causal_lm(args.model)
    model = model.to(args.device)
    saes = [AutoSAE.from_pretrained(p, subfolder=args.subfolder).to(args.device).eval() for p in args.saes]
    return model, tokenizer, saes


def run(args: argparse.Namespace) -> None:
    model, tokenizer, saes = load_model_and_saes(args)
    ctxs = text_contexts(args.data, tokenizer, args.context_length, skip=args.skip_contexts)
    results = evaluate(
        model,
        saes,
        ctxs,
        batch_size=args.batch_size,
        max_contexts=args.max_contexts,
        special_ids=tokenizer.all_special_ids,
    )
    settings = {k: getattr(args, k) for k in ("data", "skip_contexts", "context_length", "max_contexts", "model")}
    path = write_report(results, args.out, settings)
    logger.info("\n%s\nwrote %s", metrics_table(results), path)
