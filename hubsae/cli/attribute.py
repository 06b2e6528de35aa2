"""`hubsae attribute`: which SAE features, at which tokens, drive a token's log-prob (or a logit difference).

    hubsae attribute ./sae-l10 ./sae-l20 --prompt "The capital of France is" --target " Paris"
    hubsae attribute ./sae-l20 --prompt "The capital of France is" --target " Paris" --contrast " London" \
        --method ig --steps 16 --validate 10 --browser model.layers.20=../browser/index.html

Writes attribution.json (every node: hookpoint, layer, position, token, feature, activation,
attribution; AtP edges between the top nodes; the ablation check), attribution.html (the graph and
the top features per token) and, with --validate and matplotlib, validation.png (predicted against
actual metric change when each top feature is ablated). The base model is the embedded
SmolLM2-135M-Instruct unless `--model` names another causal LM.
"""

import argparse
import logging

import torch

from .eval import load_model_and_saes, non_negative_int, positive_int

logger = logging.getLogger(__name__)


def _link(text: str) -> tuple[str, str]:
    hookpoint, sep, url = text.partition("=")
    if not sep or not hookpoint or not url:
        raise argparse.ArgumentTypeError(
            f"--browser expects HOOKPOINT=URL (e.g. model.layers.6=b/index.html), got {text!r}"
        )
    return hookpoint, url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("saes", nargs="+", help="SAE folders or Hub repos, each at its config.hookpoint")
    parser.add_argument("--subfolder", default=None, help="subfolder of every SAE path (e.g. model.layers.15)")
    parser.add_argument("--model", default=None, help="causal LM name or folder; default: the embedded SmolLM2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompt", required=True, help="the text whose next token is explained")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    parser.add_argument(
        "--no-bos", action="store_true", help="do not prepend BOS (by default it is, as training contexts are built)"
    )
    parser.add_argument("--target", required=True, help="the next token, as text (one token, e.g. ' Paris')")
    parser.add_argument("--contrast", default=None, help="metric = logit(target) - logit(contrast) instead of log p")
    parser.add_argument("--method", choices=("atp", "ig"), default="atp")
    parser.add_argument("--steps", type=positive_int, default=16, help="integrated-gradients steps per SAE")
    parser.add_argument(
        "--linear", action="store_true", help="freeze attention patterns and norms in the backward (circuit-tracer)"
    )
    parser.add_argument("--edges", type=non_negative_int, default=20, help="AtP edges among this many top nodes")
    parser.add_argument("--validate", type=non_negative_int, default=10, help="top features to ablate for real")
    parser.add_argument("--top", type=positive_int, default=10, help="nodes printed")
    parser.add_argument("--browser", type=_link, action="append", default=[], help="HOOKPOINT=URL, repeatable")
    parser.add_argument("--out", default="attribution", help="output folder")


def run(args: argparse.Namespace) -> None:
    from ..eval.attribution import attribute, logit_diff, token_logprob
    from ..eval.attribution_page import write_attribution

    model, tokenizer, saes = load_model_and_saes(args)
    prompt = args.prompt
    if args.chat:
        messages = [{"role": "user", "content": prompt}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if args.contrast is None:
        metric = token_logprob(args.target, tokenizer)
    else:
        metric = logit_diff(args.target, args.contrast, tokenizer)
    bos = None if args.no_bos or args.chat else (tokenizer.bos_token or tokenizer.eos_token)
    # the BOS is an attention sink with huge activations: it runs, but is left out of the nodes
    inputs = tokenizer((bos or "") + prompt, return_tensors="pt", add_special_tokens=False).to(args.device)
    result = attribute(
        model,
        saes,
        inputs,
        metric,
        method=args.method,
        steps=args.steps,
        tokenizer=tokenizer,
        edge_nodes=args.edges,
        validate=args.validate,
        ignore_first=1 if bos else 0,
        linear=args.linear,
    )
    paths = write_attribution(result, args.out, graph_nodes=max(args.edges, args.top), browser=dict(args.browser))
    lines = [f"{result.metric_name} = {result.metric:.4f} ({args.method}); top nodes:"]
    for n in result.top(args.top):
        what = "error term" if n.feature is None else f"feature {n.feature}"
        lines.append(f"  {n.hookpoint:>24} {n.token!r:>14} @{n.position:<3} {what:>14}  {n.attribution:+.4f}")
    if result.validation is not None:
        v = result.validation
        r = "n/a" if v.pearson is None else f"{v.pearson:.3f}"
        lines.append(f"ablation check over {len(v.nodes)} features: Pearson r(predicted, actual) = {r}")
    lines.append("wrote " + ", ".join(str(p) for p in paths.values()))
    logger.info("\n".join(lines))
