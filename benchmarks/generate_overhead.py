"""Per-token overhead of each hubsae intervention during generate(), against the plain model.

SmolLM2-135M-Instruct, greedy, a batch of left-padded prompts, an 18,432-latent TopK SAE at
`model.layers.15` (random weights: the cost does not depend on what the SAE learned). The configs
run interleaved, round after round, so drift of a shared machine hits them alike; the table shows
the best round. Besides wall-clock time it reports the process's CPU time, which other processes
on a shared machine barely disturb (with `--threads 1` it is the work done, thread spin included
otherwise).

    .venv/bin/python benchmarks/generate_overhead.py                 # CPU, batch 4, 32 new tokens
    .venv/bin/python benchmarks/generate_overhead.py --device cuda   # on a GPU
"""

import argparse
import contextlib
import sys
import time

import torch

import hubsae
from hubsae.models import load_smollm2

PROMPTS = [
    "The capital of France is",
    "Write one sentence about why the sky is blue.",
    "Once upon a time, in a small village by the sea,",
    "The three most important things in a good recipe are",
]


@contextlib.contextmanager
def dense_splice(model, sae):
    """The naive splice the targets compare with: a hook that runs sae(x) with its dense decode."""
    layer = model.get_submodule(sae.config.hookpoint)
    handle = layer.register_forward_hook(lambda m, a, out: sae(out).reconstruction)
    try:
        yield
    finally:
        handle.remove()


def interventions(model, sae) -> dict:
    feature = 123
    return {
        "plain": contextlib.nullcontext,
        "steer (all positions)": lambda: hubsae.steer(model, sae, {feature: 8.0}),
        "steer (generated, relative)": lambda: hubsae.steer(
            model, sae, {feature: 0.5}, positions="generated", relative=True
        ),
        "record": lambda: hubsae.record(model, sae),
        "splice": lambda: hubsae.splice(model, sae),
        "splice (keep_error)": lambda: hubsae.splice(model, sae, keep_error=True),
        "ablate": lambda: hubsae.ablate(model, sae, [feature]),
        "clamp": lambda: hubsae.clamp(model, sae, {feature: 5.0}),
        "naive dense splice (reference)": lambda: dense_splice(model, sae),
    }


def time_generate(model, inputs, new_tokens: int, manager, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one generate() call."""
    with torch.no_grad(), manager():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--d-sae", type=int, default=18432)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_smollm2()
    model.to(args.device)
    tokenizer.padding_side = "left"
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[: args.batch]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(args.device)
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    torch.manual_seed(0)
    config = hubsae.TopKSAEConfig(
        d_in=model.config.hidden_size, d_sae=args.d_sae, k=args.k, hookpoint=f"model.layers.{args.layer}"
    )
    sae = hubsae.TopKSAE(config).to(args.device).eval()
    configs = interventions(model, sae)

    for manager in configs.values():  # warm-up: allocator, first-call paths
        time_generate(model, inputs, 4, manager, args.device)
    wall: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, manager in configs.items():
            w, c = time_generate(model, inputs, args.new_tokens, manager, args.device)
            wall[name].append(w / args.new_tokens)
            cpu[name].append(c / args.new_tokens)
        cpu_overheads = ", ".join(f"{name} {100 * (ts[-1] / cpu['plain'][-1] - 1):+.1f}%" for name, ts in cpu.items())
        print(f"round {r + 1}/{args.rounds} CPU-time overheads: {cpu_overheads}", file=sys.stderr, flush=True)
    report(args, wall, cpu)


def report(args: argparse.Namespace, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    print(
        f"\ngenerate() on {args.device}, SmolLM2-135M, batch {args.batch}, {args.new_tokens} new tokens, "
        f"TopK SAE d_sae={args.d_sae} k={args.k} at model.layers.{args.layer}, best of {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| intervention | wall ms / step | wall overhead | CPU ms / step | CPU-time overhead |")
    print("|---|---|---|---|---|")
    base_wall, base_cpu = min(wall["plain"]), min(cpu["plain"])
    for name in wall:
        w, c = min(wall[name]), min(cpu[name])
        print(
            f"| {name} | {w * 1e3:.1f} | {100 * (w / base_wall - 1):+.1f}% "
            f"| {c * 1e3:.1f} | {100 * (c / base_cpu - 1):+.1f}% |"
        )
    print(f"\nplain: {args.batch / base_wall:.1f} tok/s wall (a step generates {args.batch} tokens)")


if __name__ == "__main__":
    main()
