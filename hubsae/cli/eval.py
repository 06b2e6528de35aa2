"""Evaluate SAEs on held-out text: MSE, three FVU variants, L0, dead/dense latents, CE loss clean /
spliced / zero-ablated, CE recovered, KL, decoder cosine. Writes eval.json, eval.md, density PNGs.

`--suite core,dictionary,absorption,probing,autointerp` runs those steps of `hubsae.eval.suite` in one command
(one eval.json / eval.md, a PNG per metric family). A run folder of `hubsae train --seeds` (with
`seed_<n>` folders) stands for its seeds; seeds of one run get mean +- sd and cross-seed matching.
"""

import argparse
import logging
from functools import partial
from pathlib import Path

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


def add_model_and_data_arguments(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    """Arguments `hubsae eval` and `hubsae browse` share."""
    parser.add_argument("--subfolder", default=None, help="subfolder of every SAE path (e.g. model.layers.15)")
    parser.add_argument("--model", default=None, help="causal LM name or folder; default: the embedded SmolLM2")
    parser.add_argument(
        "--data",
        required=data_required,
        help="held-out text: a file, a folder, corpus:NAME or hf:NAME (see hubsae.data)",
    )
    parser.add_argument(
        "--skip-contexts", type=non_negative_int, default=0, help="drop this many contexts first (training data)"
    )
    parser.add_argument("--context-length", type=positive_int, default=128)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "saes", nargs="+", help="SAE folders or Hub repos (hubsae or a supported outside format), or seed run folders"
    )
    add_model_and_data_arguments(parser, data_required=False)
    parser.add_argument("--max-contexts", type=positive_int, default=64, help="contexts to evaluate on")
    parser.add_argument("--out", default="eval", help="output folder for eval.json, eval.md and the PNGs")
    parser.add_argument(
        "--suite", default=None, help="comma-separated steps: core, dictionary, absorption, probing, autointerp"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random controls and samples")
    parser.add_argument("--composition-steps", type=positive_int, default=1500, help="meta-SAE training steps")
    parser.add_argument("--absorption-words", type=positive_int, default=None, help="vocabulary words (default all)")
    parser.add_argument("--probing-per-class", type=positive_int, default=100, help="texts per probing class")
    parser.add_argument("--autointerp-latents", type=positive_int, default=20, help="latents to explain per SAE")
    parser.add_argument(
        "--explainer-url", default=None, help="OpenAI-compatible chat endpoint for autointerp (default: SmolLM2)"
    )
    parser.add_argument("--explainer-model", default=None, help="model name sent to --explainer-url")


def sae_locations(paths: list[str], subfolder: str | None) -> dict[str, tuple[str, str | None]]:
    """{name: (path, subfolder)}: a local folder holding `seed_<n>` runs stands for each seed's SAE (its
    `subfolder`, or its only SAE folder); any other path is one SAE. Names are the SAE's full path."""
    from ..eval.seeds import seed_dirs

    found: dict[str, tuple[str, str | None]] = {}
    for path in paths:
        seeds = seed_dirs(path) if Path(path).is_dir() else []
        if not seeds:
            found[str(Path(path, subfolder)) if subfolder else path] = (path, subfolder)
        for seed in seeds:
            sub = subfolder or _only_sae_folder(seed)
            found[str(seed / sub) if sub else str(seed)] = (str(seed), sub)
    return found


def _only_sae_folder(run: Path) -> str | None:
    """The one subfolder of a training run holding an SAE (config.json), None if the run is the SAE."""
    if (run / "config.json").is_file():
        return None
    subs = sorted(p.name for p in run.iterdir() if (p / "config.json").is_file())
    if len(subs) != 1:
        raise ValueError(f"{run} holds {len(subs)} SAE folders {subs}: pick one with --subfolder")
    return subs[0]


def load_model_and_saes(args: argparse.Namespace):
    """(model, tokenizer, saes) on `args.device`, the model in eval mode."""
    from ..llm import load_causal_lm

    model, tokenizer = load_causal_lm(args.model)
    model = model.to(args.device)
    saes = [AutoSAE.from_pretrained(p, subfolder=args.subfolder).to(args.device).eval() for p in args.saes]
    return model, tokenizer, saes


def run(args: argparse.Namespace) -> None:
    if args.suite is not None:
        return run_suite_command(args)
    if args.data is None:
        raise SystemExit("hubsae eval: --data (held-out text) is required")
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


def run_suite_command(args: argparse.Namespace) -> None:
    from ..eval.suite import STEPS, parse_suite, run_suite

    steps = parse_suite(args.suite)
    locations = sae_locations(args.saes, args.subfolder)
    saes = {n: AutoSAE.from_pretrained(p, subfolder=s).to(args.device).eval() for n, (p, s) in locations.items()}
    model = tokenizer = contexts = None
    if any(STEPS[s].needs_model for s in steps):
        if args.data is None:
            raise SystemExit(f"hubsae eval --suite {args.suite}: --data (held-out text) is required")
        from ..llm import load_causal_lm

        model, tokenizer = load_causal_lm(args.model)
        model = model.to(args.device).eval()
        contexts = partial(text_contexts, args.data, tokenizer, args.context_length, skip=args.skip_contexts)

    options = {
        "batch_size": args.batch_size,
        "max_contexts": args.max_contexts,
        "seed": args.seed,
        "composition_steps": args.composition_steps,
        "absorption_words": args.absorption_words,
        "probing_per_class": args.probing_per_class,
        "autointerp_latents": args.autointerp_latents,
    }
    if args.explainer_url:
        from ..eval.autointerp_backends import OpenAIChat

        options["explainer"] = OpenAIChat(args.explainer_url, args.explainer_model)
    keys = ("data", "skip_contexts", "context_length", "max_contexts", "model", "seed", "composition_steps")
    settings = {k: getattr(args, k) for k in keys}
    path = run_suite(steps, saes, args.out, model=model, tokenizer=tokenizer, contexts=contexts,
                     options=options, settings=settings)  # fmt: skip
    logger.info("wrote %s and %s", path, path.with_name("eval.md"))
