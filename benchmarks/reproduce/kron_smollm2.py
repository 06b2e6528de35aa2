"""KronSAE on SmolLM2-135M activations: the mAND ablation (arXiv 2505.22255 Table 1) at two budgets,
and KronSAE vs TopK at equal tokens, equal FLOPs and equal time (Fig. 1 / Table 6 protocol, eq. 7).

Scaled down for a CPU: residual stream after model.layers.10 (d = 576) on the Shakespeare corpus,
F = 4 d = 2304, k = 32, batch 256, the paper's schedule (App. A.1: AdamW lr 8e-4, linear warmup
over the first 10% of steps, cosine to 1e-6), every token seen once, dead window 10% of the run,
3 seeds. FVU is pooled, on a held-out 10% of the tokens; EV = 1 - FVU.

Iso-FLOP: KronSAE gets tokens_TopK * FLOPs_TopK / FLOPs_Kron tokens (eq. 7), with its own full
schedule. Each run also records a learning curve (held-out EV against tokens and against its own
training seconds), so "equal time" is read off the curves at TopK's final training time.

Run: nice -n 10 .venv/bin/python benchmarks/reproduce/kron_smollm2.py [--only ablation|iso_flop] [--quick]
"""

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from common import Run, fvu, mean_l0, mean_sd, scale_to_sqrt_d, smollm2_activations, split, table, train

import hubsae
from hubsae.saes.kron import kron_flops, topk_flops

logger = logging.getLogger(__name__)
D, K = 576, 32
PAPER_TABLE1 = {"mand": "0.8445", "relu_prod": "0.8328", "raw_prod": "0.8297"}
OUT = Path(__file__).resolve().parents[2] / "docs"


def make(arch: str, d_sae: int, seed: int):
    """'topk', or 'kron:m,n[:composition]'."""
    torch.manual_seed(seed)
    if arch == "topk":
        return hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=D, d_sae=d_sae, k=K))
    _, mn, *comp = arch.split(":")
    m, n = map(int, mn.split(","))
    cfg = hubsae.KronSAEConfig(
        d_in=D, d_sae=d_sae, k=K, num_heads=d_sae // (m * n), m=m, n=n, composition=comp[0] if comp else "mand"
    )
    return hubsae.KronSAE(cfg)


def flop_ratio(arch: str, d_sae: int) -> float:
    """FLOPs per token of `arch` over TopK's (eq. 7)."""
    if arch == "topk":
        return 1.0
    m, n = map(int, arch.split(":")[1].split(","))
    return kron_flops(D, d_sae // (m * n), m, n, K) / topk_flops(D, d_sae, K)


_FITS: dict[tuple[str, int, int, float], Run] = {}


def fit(arch: str, tokens: int, seed: int, data, args, points: int = 8, dead_fraction: float = 0.1) -> Run:
    """One run (memoized: the ablation's mAND arm is the iso-FLOP table's equal-tokens Kron (2,4))."""
    key = (arch.removesuffix(":mand"), tokens, seed, dead_fraction)
    if key not in _FITS:
        train_x, test_x, curve_x = data
        sae = make(arch, args.d_sae, seed)
        marks = [tokens * (i + 1) // points for i in range(points)]
        run = train(
            sae,
            train_x,
            tokens,
            batch=args.batch,
            seed=seed,
            curve_at=marks,
            curve_data=curve_x,
            dead_fraction=dead_fraction,
        )
        run.ev, run.l0 = 1 - fvu(sae, test_x), mean_l0(sae, test_x)
        logger.info(
            "%s %d tokens seed %d: EV %.4f, alive %.3f, %.0f s", arch, tokens, seed, run.ev, run.alive, run.seconds
        )
        _FITS[key] = run
    return _FITS[key]


def ablation(data, args, results: dict) -> None:
    for tokens in args.ablation_tokens:
        rows = []
        for comp in ("mand", "relu_prod", "raw_prod"):
            runs = [fit(f"kron:2,4:{comp}", tokens, s, data, args) for s in args.seeds]
            results[f"ablation/{comp}/{tokens}"] = [r.__dict__ for r in runs]
            evs = [r.ev for r in runs]
            alive = [r.alive for r in runs]
            rows.append([comp, mean_sd(evs), " ".join(f"{v:.4f}" for v in evs), mean_sd(alive), PAPER_TABLE1[comp]])
        print(f"\nmAND ablation, (m,n,h) = (2,4,{args.d_sae // 8}), {tokens:,} tokens, seeds {args.seeds}")
        heads = ["composition", "EV (mean ± sd)", "per seed", "alive", "paper EV, Table 1 (F=65k, (2,4,8192))"]
        print(table(rows, heads))


def auxk_off(data, args, results: dict) -> None:
    """Diagnostic: the ablation's larger budget with AuxK never firing (dead window = the whole run)."""
    tokens, rows = args.ablation_tokens[-1], []
    for comp in ("mand", "relu_prod"):
        runs = [fit(f"kron:2,4:{comp}", tokens, s, data, args, dead_fraction=1.0) for s in args.seeds[:1]]
        results[f"auxk_off/{comp}/{tokens}"] = [r.__dict__ for r in runs]
        rows.append([comp, runs[0].ev, runs[0].l0])
    print(f"\nmAND ablation without AuxK, {tokens:,} tokens, seed {args.seeds[0]}")
    print(table(rows, ["composition", "EV", "L0"]))


def iso_flop(data, args, results: dict) -> None:
    base = args.topk_tokens
    arms = [("topk", base)]
    for arch in ("kron:2,4", "kron:4,4"):
        arms += [(arch, base), (arch, round(base / flop_ratio(arch, args.d_sae)))]
    rows = []
    for arch, tokens in arms:
        runs = [fit(arch, tokens, s, data, args) for s in args.seeds]
        results[f"iso/{arch}/{tokens}"] = [r.__dict__ for r in runs]
        evs = [r.ev for r in runs]
        secs = [r.seconds for r in runs]
        budget = "equal tokens" if tokens == base else "equal FLOPs"
        rows.append([arch, budget, f"{tokens:,}", flop_ratio(arch, args.d_sae), mean_sd(evs), mean_sd(secs, 0)])
    print(f"\nKronSAE vs TopK (TopK: {base:,} tokens), F = {args.d_sae}, k = {K}, seeds {args.seeds}")
    print(table(rows, ["SAE", "budget", "tokens", "FLOPs/token vs TopK", "EV (mean ± sd)", "train s"]))
    print(equal_time(results, base, args))
    plot_curves(results, base, args)


def interpolate(curve: list, seconds: float) -> float | None:
    """EV at `seconds` of training on a learning curve [(tokens, seconds, EV)], None past its end."""
    prev = (0, 0.0, None)
    for point in curve:
        if point[1] >= seconds:
            if prev[2] is None:
                return None
            w = (seconds - prev[1]) / (point[1] - prev[1])
            return prev[2] + w * (point[2] - prev[2])
        prev = point
    return None


def equal_time(results: dict, base: int, args) -> str:
    """At TopK's final training time (per seed), the EV of each longer KronSAE run's curve."""
    topk = results[f"iso/topk/{base}"]
    rows = []
    for key, runs in results.items():
        if not key.startswith("iso/kron") or key.endswith(f"/{base}"):
            continue
        evs = [interpolate(r["curve"], t["seconds"]) for r, t in zip(runs, topk, strict=True)]
        got = [e for e in evs if e is not None]
        ev = mean_sd(got) if len(got) == len(evs) else "run ended before TopK's time"
        rows.append([key.split("/")[1], ev, mean_sd([t["curve"][-1][2] for t in topk])])
    return "\nequal time (EV on each Kron curve at TopK's own final train seconds, per seed)\n" + table(
        rows, ["SAE", "EV at TopK's time (8,192 held-out rows)", "TopK final EV (same rows)"]
    )


def plot_curves(results: dict, base: int, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, runs in results.items():
        if not key.startswith("iso/") or (key.startswith("iso/kron") and key.endswith(f"/{base}")):
            continue
        label = key.split("/")[1]
        for i, r in enumerate(runs):
            tokens, seconds, ev = zip(*r["curve"], strict=True)
            color = {"topk": "C0", "kron:2,4": "C1", "kron:4,4": "C2"}[label]
            axes[0].plot(tokens, ev, color=color, alpha=0.7, label=label if i == 0 else None)
            axes[1].plot(seconds, ev, color=color, alpha=0.7, label=label if i == 0 else None)
    for ax, xlabel in zip(axes, ("training tokens", "training seconds (1 CPU thread)"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out EV")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"SmolLM2-135M L10, F={args.d_sae}, k={K}: iso-FLOP runs (each its own cosine schedule)")
    fig.tight_layout()
    path = args.out / "kron_iso_flop.png"
    fig.savefig(path, dpi=110)
    logger.info("wrote %s", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["ablation", "iso_flop", "auxk_off"], default=None)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (20k cached tokens, F 576, 1 seed)")
    parser.add_argument("--out", type=Path, default=OUT / "reproductions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        n_tokens, args.d_sae, args.batch, args.seeds = 20_000, 576, 256, [0]
        args.ablation_tokens, args.topk_tokens = [4096], 4096
    else:
        n_tokens, args.d_sae, args.batch, args.seeds = 240_000, 2304, 256, [0, 1, 2]
        args.ablation_tokens, args.topk_tokens = [25_600, 102_400], 51_200
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_x, test_x = scale_to_sqrt_d(*split(smollm2_activations(n_tokens)))
    data = (train_x, test_x, test_x[:8192])
    results: dict = {}
    if args.only in (None, "ablation"):
        ablation(data, args, results)
    if args.only in (None, "iso_flop"):
        iso_flop(data, args, results)
    if args.only == "auxk_off":
        auxk_off(data, args, results)
    name = "quick" if args.quick else (args.only or "all")
    (args.out / f"kron_smollm2_{name}.json").write_text(json.dumps(results))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
