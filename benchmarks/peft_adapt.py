"""LoRA around a frozen SAE on SmolLM2 (CPU): how much of the spliced LM-loss gap does it close?

Trains a small TopK SAE (or loads one with --sae), then reports next-token CE on held-out
Shakespeare/Milton contexts for: the clean model, the model with the SAE spliced in, the same
after LoRA adaptation (Chen, Engels, Tegmark 2025), and the adapted model without the SAE.

    .venv/bin/python benchmarks/peft_adapt.py                       # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/peft_adapt.py --sae runs/demo/model.layers.6 --steps 60
"""

import argparse
import itertools
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import hubsae  # noqa: E402
from hubsae.adapt import LoRAAdaptConfig, adapt_lora  # noqa: E402
from hubsae.data import TextSource, contexts  # noqa: E402
from hubsae.eval.metrics import token_cross_entropy  # noqa: E402
from hubsae.llm import load_smollm2  # noqa: E402
from hubsae.train import TrainConfig, Trainer  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", help="a trained SAE folder; default: train one here")
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--sae-tokens", type=int, default=250_000)
    p.add_argument("--steps", type=int, default=40, help="LoRA steps")
    p.add_argument("--batch", type=int, default=8, help="contexts per LoRA step")
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--eval-contexts", type=int, default=48)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--layers", default="all", choices=["all", "after"])
    return p.parse_args()


def get_sae(args, model, tokenizer) -> hubsae.SAE:
    if args.sae:
        return hubsae.AutoSAE.from_pretrained(args.sae)
    hookpoint = f"model.layers.{args.layer}"
    config = TrainConfig(
        hookpoints=[hookpoint],
        dataset="corpus:shakespeare",
        sae={"k": 32},
        batch_size=2048,
        max_tokens=args.sae_tokens,
        lr=8e-4,
        lr_warmup_steps=10,
        output_dir="runs/bench-peft-sae",
        progress_bar=True,
    )
    return Trainer(config, model=model, tokenizer=tokenizer).train()[hookpoint].eval()


@torch.no_grad()
def mean_ce(model, ids_list, sae=None) -> float:
    total, count = 0.0, 0
    for ids in ids_list:
        if sae is None:
            logits = model(input_ids=ids).logits
        else:
            with hubsae.splice(model, sae):
                logits = model(input_ids=ids).logits
        s, n = token_cross_entropy(logits, ids)
        total, count = total + float(s), count + int(n)
    return total / count


def main() -> None:
    args = parse()
    torch.manual_seed(0)
    model, tokenizer = load_smollm2()
    sae = get_sae(args, model, tokenizer)
    # held-out contexts come from far into the corpus: the SAE saw only its first sae_tokens tokens
    stream = contexts(TextSource(path="corpus:shakespeare"), tokenizer, args.context)
    skip = 3 * args.sae_tokens // args.context
    pool = list(itertools.islice(stream, skip, skip + args.eval_contexts + args.steps * args.batch))
    eval_ids = [torch.stack(pool[i : i + 8]) for i in range(0, args.eval_contexts, 8)]
    train = pool[args.eval_contexts :]
    batches = [torch.stack(train[i : i + args.batch]) for i in range(0, len(train), args.batch)]

    clean = mean_ce(model, eval_ids)
    spliced = mean_ce(model, eval_ids, sae)
    start = time.perf_counter()
    config = LoRAAdaptConfig(r=args.r, alpha=2 * args.r, steps=args.steps, lr=args.lr, layers=args.layers)
    adapted, history = adapt_lora(model, sae, batches, config)
    seconds = time.perf_counter() - start
    spliced_lora = mean_ce(adapted, eval_ids, sae)
    with adapted.disable_adapter():
        assert abs(mean_ce(adapted, eval_ids) - clean) < 1e-4, "disabling the adapter must give the clean model"
    lora_only = mean_ce(adapted, eval_ids)

    gap, gap_after = spliced - clean, spliced_lora - clean
    print(
        f"\nSAE {type(sae).__name__} d_sae={sae.config.d_sae} at {sae.config.hookpoint}; "
        f"LoRA r={args.r} on {args.layers} layers, {args.steps} steps x {args.batch}x{args.context} tokens "
        f"({seconds:.0f} s), KL {history[0]:.3f} -> {history[-1]:.3f}"
    )
    print(f"held-out: {len(eval_ids) * 8} contexts x {args.context} tokens\n")
    print("| model | CE (nats) | gap to clean |")
    print("|---|---|---|")
    for name, value in [
        ("clean", clean),
        ("SAE spliced", spliced),
        ("SAE spliced + LoRA", spliced_lora),
        ("LoRA, no SAE", lora_only),
    ]:
        print(f"| {name} | {value:.4f} | {value - clean:+.4f} |")
    print(f"\nfraction of the spliced CE gap closed by LoRA: {(gap - gap_after) / gap:.1%}")


if __name__ == "__main__":
    main()
