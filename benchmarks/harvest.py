"""Harvest throughput vs the plain truncated forward (goal: <= 10% overhead), SmolLM2 on CPU.

Three ways through the same contexts, interleaved round by round:
  plain    the model's forward stopped after the hooked layer by a hook that only raises
  harvest  hubsae's Harvester (captures the activation, same early stop)
  stream   the whole data path: harvest_blocks (special-token mask, float32, concatenation)
           + ActivationStream (block shuffle, batches of `--sae-batch` rows)
Wall time and process CPU time are both reported (CPU time is steadier on a shared machine).

    .venv/bin/python benchmarks/harvest.py --layer 6 --rounds 3
"""

import argparse
import statistics
import time
from itertools import islice

import torch

from hubsae.data import ActivationStream, Harvester, harvest_blocks
from hubsae.data.text import TextSource, contexts, special_token_mask
from hubsae.llm import load_smollm2


class _Stop(Exception):
    pass


def plain_truncated(model, layer: int, batches: list[torch.Tensor]) -> None:
    def stop(*_):
        raise _Stop

    handle = model.model.layers[layer].register_forward_hook(stop)
    try:
        for ids in batches:
            try:
                model(input_ids=ids, use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--contexts", type=int, default=64, help="contexts per round (one shuffle block)")
    ap.add_argument("--context-length", type=int, default=128)
    ap.add_argument("--model-batch", type=int, default=16)
    ap.add_argument("--sae-batch", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dataset", default="corpus:shakespeare")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    model, tok = load_smollm2()
    source = TextSource(args.dataset)
    ctx = list(islice(contexts(source, tok, args.context_length), args.contexts))
    batches = list(torch.stack(ctx).split(args.model_batch))
    n_tokens = args.contexts * args.context_length
    hookpoint = f"model.layers.{args.layer}"
    harvester = Harvester(model, [hookpoint])
    blocks = harvest_blocks(model, tok, lambda: iter(ctx), [hookpoint], args.contexts, args.model_batch)

    special = sum(int(special_token_mask(c, tok).sum()) for c in ctx)
    per_block = (n_tokens - special) // args.sae_batch  # batches one block yields (the tail is dropped)

    def stream():
        for _, batch in islice(ActivationStream(blocks, args.sae_batch)(), per_block):
            assert batch[hookpoint].shape == (args.sae_batch, model.config.hidden_size)

    ways = {
        "plain": lambda: plain_truncated(model, args.layer, batches),
        "harvest": lambda: [harvester(ids) for ids in batches],
        "stream": stream,
    }
    ways["plain"]()  # warm-up
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            results[name].append(timed(fn))

    base_wall = statistics.median(w for w, _ in results["plain"])
    base_cpu = statistics.median(c for _, c in results["plain"])
    print(
        f"SmolLM2-135M, stop after {hookpoint}, {n_tokens} tokens a round ({args.contexts}x{args.context_length}), "
        f"model batch {args.model_batch}, {args.rounds} rounds, torch threads {torch.get_num_threads()}"
    )
    print(f"{'way':<8} {'tok/s (wall)':>13} {'overhead':>9} {'tok/s (cpu)':>12} {'overhead':>9}")
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(
            f"{name:<8} {n_tokens / wall:>13.0f} {100 * (wall / base_wall - 1):>8.1f}% "
            f"{n_tokens / cpu:>12.0f} {100 * (cpu / base_cpu - 1):>8.1f}%"
        )


if __name__ == "__main__":
    main()
