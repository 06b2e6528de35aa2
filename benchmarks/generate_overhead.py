"""Per-token overhead of each hubsae intervention during generate(), against the plain model.

SmolLM2-135M-Instruct, greedy, a batch of left-padded prompts, an 18,432-latent TopK SAE at
`model.layers.15` (random weights: the cost does not depend on what the SAE learned). The configs
run interleaved, round after round, so drift of a shared machine hits them alike; the overhead is
each config's time over plain's in the same round (median over rounds), and a second plain run
gauges the noise. Besides wall-clock time it reports the process's CPU time, which other
processes on a shared machine disturb less (with `--threads 1` it is the work done).

    .venv/bin/python benchmarks/generate_overhead.py                 # CPU, batch 4, 32 new tokens
    .venv/bin/python benchmarks/generate_overhead.py --device cuda   # on a GPU
"""

import argparse
import contextlib
import statistics
import sys
import time

import torch

import hubsae
from hubsae.llm import load_smollm2

PROMPTS = [
    "The capital of France is",
    "Write one sentence about why the sky is blue.",
    "Once upon a time, in a small village by the sea,",
    "The three most important things in a good recipe are",
]


@contextlib.contextmanager
def encoder_gemm(model, sae):
    """The floor of every SAE-running intervention: a hook that only computes x W_enc + b_enc.

    Its result is dropped, so the model runs unchanged; the TopK selection, decode and add are not run.
    """
    layer = model.get_submodule(sae.config.hookpoint)

    def hook(module, args, out) -> None:
        x = out[0] if isinstance(out, tuple) else out
        torch.addmm(sae.b_enc, x.reshape(-1, x.shape[-1]), sae.W_enc)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


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
        "plain again (noise gauge)": contextlib.nullcontext,
        "steer (all positions)": lambda: hubsae.steer(model, sae, {feature: 8.0}),
        # the same hooks adding a zero vector: same tokens as plain, so any gap is the hooks' machinery
        "steer (all, coefficient 0)": lambda: hubsae.steer(model, sae, {feature: 0.0}),
        "steer (generated, relative)": lambda: hubsae.steer(
            model, sae, {feature: 0.5}, positions="generated", relative=True
        ),
        "record": lambda: hubsae.record(model, sae),
        "splice": lambda: hubsae.splice(model, sae),
        "splice (keep_error)": lambda: hubsae.splice(model, sae, keep_error=True),
        "ablate": lambda: hubsae.ablate(model, sae, [feature]),
        "clamp": lambda: hubsae.clamp(model, sae, {feature: 5.0}),
        "encoder GEMM only (floor)": lambda: encoder_gemm(model, sae),
        "naive dense splice (reference)": lambda: dense_splice(model, sae),
    }


def _hook_dicts(model):
    for module in model.modules():
        yield module._forward_hooks
        yield module._forward_pre_hooks


@contextlib.contextmanager
def timed_hooks(model, manager):
    """Enter `manager` and time (process CPU) every hook it registered: yields [seconds spent]."""
    before = {key for hooks in _hook_dicts(model) for key in hooks}
    spent = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - start

        return wrapper

    with manager():
        for hooks in _hook_dicts(model):
            for key in [k for k in hooks if k not in before]:
                hooks[key] = timed(hooks[key])  # same key: the manager's handles still remove it
        yield spent


def time_generate(model, inputs, new_tokens: int, manager, device: str) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, CPU seconds inside the manager's hooks) of one generate()."""
    with torch.no_grad(), timed_hooks(model, manager) as spent:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return wall, cpu, spent[0]


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
    times = {kind: {name: [] for name in configs} for kind in ("wall", "cpu", "hooks")}
    names = list(configs)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no config always follows another
            measured = time_generate(model, inputs, args.new_tokens, configs[name], args.device)
            for kind, value in zip(times, measured, strict=True):
                times[kind][name].append(value / args.new_tokens)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    report(args, times)


def paired_overhead(times: dict[str, list[float]], name: str) -> float:
    """Median over rounds of this config's time over the plain runs' mean in the same round, minus 1.

    Pairing within a round cancels the slow drift of a shared machine.
    """
    plain = [(a + b) / 2 for a, b in zip(times["plain"], times["plain again (noise gauge)"], strict=True)]
    return statistics.median(t / p for t, p in zip(times[name], plain, strict=True)) - 1


def report(args: argparse.Namespace, times: dict[str, dict[str, list[float]]]) -> None:
    wall, cpu, hooks = times["wall"], times["cpu"], times["hooks"]
    plain_cpu = statistics.median(cpu["plain"] + cpu["plain again (noise gauge)"])
    floor = statistics.median(hooks["encoder GEMM only (floor)"])
    print(
        f"\ngenerate() on {args.device}, SmolLM2-135M, batch {args.batch}, {args.new_tokens} new tokens, "
        f"TopK SAE d_sae={args.d_sae} k={args.k} at model.layers.{args.layer}, {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads. Overheads: median over rounds of the ratio to the plain runs of the "
        "same round. Hook cost: CPU time inside the hooks over a plain step's CPU time; x floor: hook CPU time over "
        "that of a hook computing only the encoder GEMM.\n"
    )
    print(
        "| intervention | wall ms/step | wall overhead | CPU ms/step | CPU overhead | hook CPU ms/step | hook cost "
        "| x floor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in wall:
        hook = statistics.median(hooks[name])
        print(
            f"| {name} | {statistics.median(wall[name]) * 1e3:.1f} | {100 * paired_overhead(wall, name):+.1f}% "
            f"| {statistics.median(cpu[name]) * 1e3:.1f} | {100 * paired_overhead(cpu, name):+.1f}% "
            f"| {hook * 1e3:.2f} | {100 * hook / plain_cpu:.1f}% | {hook / floor:.2f} |"
        )
    print(
        f"\nplain: {args.batch / statistics.median(wall['plain']):.1f} tok/s wall (a step generates {args.batch} tokens)"
    )


if __name__ == "__main__":
    main()
