"""`hubsae steer`: generate with and without adding SAE feature directions, side by side.

    hubsae steer ./my-sae --feature 1234=8 --prompt "Tell me about your weekend."
    hubsae steer org/repo --subfolder model.layers.15 --feature 1234=0.5 --relative --positions all

    hubsae steer ./my-sae --sweep --feature 1234 --feature 99 --strengths 0.25,0.5,1 --relative

    hubsae steer ./my-sae --feature 1234=0.5 --relative --save-spec steering.json   # also write the spec
    hubsae steer --spec steering.json            # or a folder / Hub repo pushed with hubsae.push_steered

With `--sweep`, each feature is added at each strength (coefficients ignored) and every continuation
is scored by the unsteered model: concept = the SAE's mean activation of the feature on the generated
tokens, fluency = their perplexity; it writes steering.json and steering.png to `--output-dir` and
names, per feature, the strongest concept within `--max-perplexity-ratio` of the unsteered text.
The base model is the embedded SmolLM2-135M-Instruct unless `--model` names another causal LM.
"""

import argparse
import logging

import torch

from ..llm import load_causal_lm

logger = logging.getLogger(__name__)


def _feature(text: str) -> tuple[int, float]:
    index, sep, value = text.partition("=")
    try:
        return int(index), float(value) if sep else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"--feature expects INDEX=COEFFICIENT (e.g. 1234=8), got {text!r}") from None


def _strengths(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--strengths expects comma-separated numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sae", nargs="?", help="local folder or Hub repo of the SAE (not with --spec)")
    parser.add_argument("--subfolder", default=None, help="the SAE's folder inside the repo")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of the SAE's (or --spec's) repo")
    parser.add_argument("--feature", type=_feature, action="append", help="INDEX=COEFFICIENT, repeatable")
    parser.add_argument("--spec", default=None, help="a steering spec: JSON file, folder or Hub repo (steering.json)")
    parser.add_argument("--save-spec", default=None, help="write the steering given by the arguments as a spec")
    parser.add_argument("--hookpoint", default=None, help="overrides the SAE's config.hookpoint")
    parser.add_argument("--relative", action="store_true", help="coefficients are fractions of ||x|| per token")
    parser.add_argument("--positions", choices=("all", "prompt", "generated"), default="generated")
    parser.add_argument("--prompt", action="append", help="repeatable; default: one example prompt")
    parser.add_argument("--model", default=None, help="a causal LM folder or repo (default: embedded SmolLM2)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    sweep = parser.add_argument_group("sweep (steering evaluation)")
    sweep.add_argument("--sweep", action="store_true", help="score each --feature over --strengths")
    sweep.add_argument(
        "--strengths", type=_strengths, default=[0.0, 0.25, 0.5, 1.0, 2.0], help="comma-separated coefficients"
    )
    sweep.add_argument("--max-perplexity-ratio", type=float, default=2.0, help="fluency margin for the pick")
    sweep.add_argument(
        "--max-repetition-increase", type=float, default=0.2, help="most extra repeated bigrams for the pick"
    )
    sweep.add_argument("--output-dir", default="steering", help="where steering.json/.png go")


def _check(args: argparse.Namespace) -> None:
    if args.spec is not None:
        given = [flag for flag, on in (("SAE", args.sae), ("--feature", args.feature), ("--sweep", args.sweep)) if on]
        if given or args.save_spec:
            raise SystemExit(
                f"hubsae steer: --spec carries the SAEs and features; do not also give {given or '--save-spec'}"
            )
    elif args.sae is None or not args.feature:
        raise SystemExit("hubsae steer: give an SAE and at least one --feature, or --spec")


def _spec_from_args(args: argparse.Namespace):
    from pathlib import Path

    from ..llm import hub_model_id
    from ..steered import SAERef, SteeringEntry, SteeringSpec

    if Path(args.sae).exists():
        ref = SAERef(path=str(Path(args.sae).resolve()), subfolder=args.subfolder)
    else:
        ref = SAERef(repo_id=args.sae, subfolder=args.subfolder, revision=args.revision)
    features, coefficients = zip(*args.feature, strict=True)
    entry = SteeringEntry(ref, features, coefficients, args.hookpoint, args.positions, args.relative)
    return SteeringSpec((entry,), base_model=hub_model_id(args.model) or args.model)


@torch.no_grad()
def run(args: argparse.Namespace) -> None:
    from ..auto import AutoSAE
    from ..hooks.interventions import steer

    _check(args)
    if args.spec is not None:
        return _run_spec(args)
    model, tokenizer = load_causal_lm(args.model)
    sae = AutoSAE.from_pretrained(args.sae, subfolder=args.subfolder, revision=args.revision).eval()
    if args.save_spec:
        logger.info("wrote %s", _spec_from_args(args).save(args.save_spec))
    prompts = _prompts(args, tokenizer)
    if args.sweep:
        return _sweep(args, model, tokenizer, sae, prompts)
    coefficients = dict(args.feature)
    scale = "x ||x||" if args.relative else "(absolute)"
    title = f"{coefficients} {scale} at {args.hookpoint or sae.config.hookpoint}, positions={args.positions}"

    def steering():
        return steer(
            model, sae, coefficients, hookpoint=args.hookpoint, positions=args.positions, relative=args.relative
        )

    _side_by_side(args, model, tokenizer, prompts, steering, title)


def _prompts(args: argparse.Namespace, tokenizer) -> list[str]:
    """The prompts (chat-wrapped with --chat); the tokenizer set up for left-padded batches."""
    prompts = args.prompt or ["Tell me about your weekend."]
    if args.chat:
        prompts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return prompts


def _run_spec(args: argparse.Namespace) -> None:
    from ..llm import SMOLLM2_NAME
    from ..steered import Steering, load_spec_saes, read_spec

    spec, origin = read_spec(args.spec, revision=args.revision)
    saes = load_spec_saes(spec, origin)
    name = args.model or (None if spec.base_model in (None, SMOLLM2_NAME) else spec.base_model)
    model, tokenizer = load_causal_lm(name)
    title = "; ".join(
        f"{e.coefficient_map} {'x ||x||' if e.relative else '(absolute)'} at {e.hookpoint or sae.config.hookpoint}, "
        f"positions={e.positions}"
        for e, sae in zip(spec.entries, saes, strict=True)
    )
    _side_by_side(args, model, tokenizer, _prompts(args, tokenizer), lambda: Steering(model, spec, saes), title)


def _side_by_side(args: argparse.Namespace, model, tokenizer, prompts: list[str], steering, title: str) -> None:
    """Log plain and steered greedy continuations of each prompt; `steering()` is a context manager."""
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    settings = dict(max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    plain = model.generate(**inputs, **settings)
    with steering():
        steered = model.generate(**inputs, **settings)
    start = inputs.input_ids.shape[1]
    lines = [f"steering {title}"]
    for row, prompt in enumerate(args.prompt or prompts):
        lines.append(f"\nprompt:  {prompt}")
        lines.append(f"plain:   {tokenizer.decode(plain[row, start:], skip_special_tokens=True)}")
        lines.append(f"steered: {tokenizer.decode(steered[row, start:], skip_special_tokens=True)}")
    logger.info("\n".join(lines))


def _sweep(args: argparse.Namespace, model, tokenizer, sae, prompts: list[str]) -> None:
    from ..eval.steering import describe_point, pick_strength, steering_sweep, write_sweep

    features = [index for index, _ in args.feature]
    curves = steering_sweep(
        model,
        tokenizer,
        sae,
        features,
        args.strengths,
        prompts,
        max_new_tokens=args.max_new_tokens,
        hookpoint=args.hookpoint,
        positions=args.positions,
        relative=args.relative,
    )
    margins = dict(max_perplexity_ratio=args.max_perplexity_ratio, max_repetition_increase=args.max_repetition_increase)
    paths = write_sweep(curves, args.output_dir, **margins)
    lines = [
        "steering sweep: concept = the feature's activation on the generated text; fluency = perplexity, repetition"
    ]
    for curve in curves:
        lines.append(f"\nfeature {curve.feature}: unsteered {describe_point(curve.baseline)}")
        lines += [f"  strength {p.strength:g}: {describe_point(p)}" for p in curve.points]
        best = pick_strength(curve, **margins)
        lines.append(f"  picked strength {best.strength:g}: {best.texts[0]!r}")
    lines.append("wrote " + ", ".join(str(p) for p in paths.values()))
    logger.info("\n".join(lines))
