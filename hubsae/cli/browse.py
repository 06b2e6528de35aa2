"""Write a static, self-contained HTML feature browser for an SAE (open index.html in any browser,
offline): density plot, activation histograms, top contexts with highlighted tokens, top logits."""

import argparse

from ..eval.report import write_browser
from .eval import add_model_and_data_arguments, load_model_and_saes, non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("saes", nargs=1, metavar="sae", help="an SAE folder or Hub repo")
    add_model_and_data_arguments(parser)
    parser.add_argument("--max-contexts", type=positive_int, default=128, help="contexts to collect examples from")
    parser.add_argument("--examples", type=positive_int, default=20, help="top-activating contexts kept per feature")
    parser.add_argument("--samples", type=non_negative_int, default=10, help="random firing contexts kept per feature")
    parser.add_argument("--radius", type=non_negative_int, default=5, help="tokens shown on each side of the peak")
    parser.add_argument("--out", default="browser", help="output folder (index.html, features.json, eval.json)")


def run(args: argparse.Namespace) -> None:
    model, tokenizer, [sae] = load_model_and_saes(args)
    write_browser(
        model,
        tokenizer,
        sae,
        args.data,
        args.out,
        context_length=args.context_length,
        max_contexts=args.max_contexts,
        batch_size=args.batch_size,
        n_examples=args.examples,
        n_samples=args.samples,
        radius=args.radius,
        skip_contexts=args.skip_contexts,
    )
