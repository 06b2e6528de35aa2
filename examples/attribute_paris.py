"""Which SAE features make SmolLM2 complete "The capital of France is" with " Paris"?

Trains two small TopK SAEs (layers 10 and 20 of SmolLM2-135M-Instruct, 120k tokens of Shakespeare
and Milton; 11 minutes measured on 2 CPU cores shared with other jobs) unless --sae gives trained
ones, then attributes log p(" Paris") to every active feature and error term of both (attribution
patching: one forward, one backward), draws AtP edges between the top nodes, ablates the top
features one at a time to check the predictions, and writes attribution.json / attribution.html /
validation.png to --out.

    python examples/attribute_paris.py
    python examples/attribute_paris.py --sae ./sae-run/model.layers.10 --sae ./sae-run/model.layers.20
    python examples/attribute_paris.py --method ig --steps 16 --contrast " London"
"""

import argparse
import math
import time

import hubsae
from hubsae.eval.attribution import logit_diff, token_logprob
from hubsae.eval.attribution_page import write_attribution
from hubsae.llm import load_smollm2

PROMPT = "The capital of France is"


def train_saes(layers: list[int], tokens: int, output_dir: str) -> list[str]:
    config = hubsae.TrainConfig(
        model="smollm2",
        hookpoints=[f"model.layers.{layer}" for layer in layers],
        dataset="corpus:shakespeare",
        context_length=128,
        model_batch_size=16,
        buffer_contexts=130,
        expansion_factor=4,
        sae={"k": 32},
        batch_size=2048,
        max_tokens=tokens,
        lr=8e-4,
        lr_warmup_steps=10,
        log_every=20,
        output_dir=output_dir,
    )
    hubsae.Trainer(config).train(overwrite=True)
    return [f"{output_dir}/{hookpoint}" for hookpoint in config.hookpoints]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sae", action="append", help="a trained SAE folder (repeatable); default: train two")
    parser.add_argument("--layers", default="10,20", help="layers of the SAEs trained when --sae is not given")
    parser.add_argument("--train-tokens", type=int, default=120_000)
    parser.add_argument("--contrast", default=None, help="explain logit(' Paris') - logit(CONTRAST) instead")
    parser.add_argument("--method", choices=("atp", "ig"), default="atp")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--validate", type=int, default=20)
    parser.add_argument("--out", default="attribution-paris")
    args = parser.parse_args()

    started = time.perf_counter()
    paths = args.sae or train_saes([int(x) for x in args.layers.split(",")], args.train_tokens, f"{args.out}/saes")
    trained = time.perf_counter() - started
    model, tokenizer = load_smollm2()
    saes = [hubsae.AutoSAE.from_pretrained(p).eval() for p in paths]
    # a BOS first, as the training contexts were built; it is an attention sink, so left out of the nodes
    inputs = tokenizer(tokenizer.bos_token + PROMPT, return_tensors="pt", add_special_tokens=False)
    if args.contrast:
        metric = logit_diff(" Paris", args.contrast, tokenizer)
    else:
        metric = token_logprob(" Paris", tokenizer)
    started = time.perf_counter()
    result = hubsae.attribute(
        model,
        saes,
        inputs,
        metric,
        method=args.method,
        steps=args.steps,
        tokenizer=tokenizer,
        validate=args.validate,
        ignore_first=1,
    )
    took = time.perf_counter() - started
    files = write_attribution(result, args.out)

    prob = "" if args.contrast else f" (p = {math.exp(result.metric):.3f})"
    print(f"{result.metric_name} = {result.metric:.4f}{prob}")
    origin = "given" if args.sae else f"trained in {trained:.0f} s"
    print(f"SAEs: {', '.join(paths)} ({origin})")
    print(f"attribution ({args.method}) + edges + {args.validate} ablations: {took:.1f} s")
    for s in result.sites:
        print(f"  {s.hookpoint}: features + error sum to {result.total(s.hookpoint):+.4f}")
    print("top nodes (attribution = first-order estimate of metric(clean) - metric(node removed)):")
    for n in result.top(12):
        what = "error term" if n.feature is None else f"feature {n.feature}"
        print(f"  {n.hookpoint:>16} {n.token!r:>10} @{n.position}  {what:>13}  {n.attribution:+.4f}")
    v = result.validation
    if v is not None:
        agree = sum((p > 0) == (a > 0) for p, a in zip(v.predicted, v.actual, strict=True))
        r = "n/a" if v.pearson is None else f"{v.pearson:.3f}"
        print(f"ablation check: Pearson r = {r}; sign agrees for {agree} of {len(v.nodes)} features")
    print(f"{len(result.edges)} edges; wrote " + ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    main()
