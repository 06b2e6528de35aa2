"""OrtSAE vs BatchTopK on SmolLM2-135M activations: decoder geometry, FVU, L0, wall-clock, and the
two LLM-free dictionary metrics (arXiv 2509.22033 Table 1, Table 3, §4).

Scaled down for a CPU: residual stream after model.layers.10 (d = 576), Shakespeare corpus,
F = 8 d = 4608, k = 32, batch 256, 102,400 tokens each seen once, AdamW with warmup + cosine (lr 8e-4: the
paper's 2e-4 is for ~250k steps, we have 400), dead window 10% of the run, 3 seeds. OrtSAE is the
same BatchTopK plus gamma * L_orth, gamma = 0.25 in the paper's units (OrthogonalityPenalty scales
it to hubsae's summed MSE). The paper's K = ceil(F / 8192) would give one chunk here, whose
Gram matrix costs 4x the SAE's own step; we use K = 4, and also the paper's "modified" variant
(every 5 steps with gamma x 5). MeanCosSim (eq. 6) = mean over latents of the largest cosine to
another decoder row. BatchTopK is evaluated with its inference threshold, estimated over the last
10% of training (as the package's Trainer does), so L0 at evaluation should be near k.

Run: nice -n 10 .venv/bin/python benchmarks/reproduce/ortsae.py [--quick]
The decoders are kept ($HUBSAE_REPRO_CACHE/ortsae/) so `--metrics` (composition, unique features)
can be computed afterwards without retraining.
"""

import argparse
import json
import logging
import time

import torch
from common import CACHE, fvu, mean_l0, mean_nn_cosine, mean_sd, scale_to_sqrt_d, smollm2_activations, split, table
from common import train as train_sae
from safetensors.torch import load_file, save_file

import hubsae
from hubsae.train.orthogonality import OrthogonalityPenalty

logger = logging.getLogger(__name__)
D, K = 576, 32
ARMS = {
    "BatchTopK": None,
    "OrtSAE (K=4, every step)": dict(num_chunks=4),
    "OrtSAE modified (K=4, every 5, gamma x 5)": dict(num_chunks=4, every=5),
}
PAPER = (
    "paper (Gemma-2-2B L20, F=65k, L0=70): MeanCosSim BatchTopK 0.354, OrtSAE 0.112; EV 0.843 vs 0.836; "
    "composition 0.490 vs 0.340; unique features 1.5% vs 9%; time 1.11x (K=8, every 5), 1.04x (K=64)"
)


def batchtopk(d_sae: int, seed: int) -> hubsae.BatchTopKSAE:
    torch.manual_seed(seed)
    return hubsae.BatchTopKSAE(hubsae.BatchTopKSAEConfig(d_in=D, d_sae=d_sae, k=K))


def run_arm(name: str, seed: int, data, args) -> dict:
    train_x, test_x = data
    sae = batchtopk(args.d_sae, seed)
    init_cos = mean_nn_cosine(sae)
    options = ARMS[name]
    extra = None
    if options is not None:
        penalty = OrthogonalityPenalty(gamma=0.25, **options)
        gen = torch.Generator().manual_seed(seed + 100)
        extra = lambda step: penalty(sae.W_dec, step, generator=gen)  # noqa: E731
    run = train_sae(sae, train_x, args.tokens, batch=args.batch, seed=seed, extra_loss=extra)
    path = args.decoders / f"{name.split(' ')[0]}_{'mod' if 'modified' in name else 'full'}_seed{seed}.safetensors"
    save_file({"W_dec": sae.W_dec.detach().contiguous()}, path)
    result = {
        "MeanCosSim": mean_nn_cosine(sae),
        "MeanCosSim at init": init_cos,
        "FVU": fvu(sae, test_x),
        "L0": mean_l0(sae, test_x),
        "alive": run.alive,
        "seconds": run.seconds,
    }
    logger.info("%s seed %d: %s", name, seed, {k: round(v, 4) for k, v in result.items()})
    saved = args.decoders / "results.json"
    runs = json.loads(saved.read_text()) if saved.exists() else {}
    runs[f"{name}|{seed}"] = result
    saved.write_text(json.dumps(runs, indent=1))  # every finished run, so arms and seeds can run apart
    return result


def train_all(args) -> None:
    data = scale_to_sqrt_d(*split(smollm2_activations(args.n_tokens)))
    for name in args.arms:
        for seed in args.seeds:
            run_arm(name, seed, data, args)
    print_table(args)


def print_table(args) -> None:
    """The table over every run saved so far (arms may have different seeds: their count is shown)."""
    saved = json.loads((args.decoders / "results.json").read_text())
    base = {key.split("|")[1]: r["seconds"] for key, r in saved.items() if key.startswith("BatchTopK|")}
    rows = []
    for name in ARMS:
        runs = {key.split("|")[1]: r for key, r in saved.items() if key.split("|")[0] == name}
        if not runs:
            continue
        metrics = ("MeanCosSim", "MeanCosSim at init", "FVU", "L0", "alive")
        cols = [mean_sd([r[c] for r in runs.values()]) for c in metrics]
        ratio = mean_sd([r["seconds"] / base[s] for s, r in runs.items() if s in base], 2)
        rows.append([name, len(runs), *cols, ratio])
    print(f"\n{args.tokens:,} tokens (batch {args.batch}), F={args.d_sae}, k={K}, gamma=0.25 (paper units)")
    heads = [
        "SAE",
        "seeds",
        "MeanCosSim",
        "MeanCosSim at init",
        "FVU (test)",
        "L0 (test)",
        "alive",
        "train time vs BatchTopK",
    ]
    print(table(rows, heads))
    print(PAPER)


def dictionary_metrics(args) -> None:
    """Composition (hubsae.eval.dictionary.composition_rate: a BatchTopK meta-SAE, dictionary F/4,
    k = 4, on the unit decoder rows; its EV, lower = more atomic) and the unique-feature curve
    (fraction of latents whose max cosine to the other SAE's latents is below t; OrtSAE uses 0.2),
    beside random unit rows of the same shape. Pairs are always from *different* seeds: SAEs of the
    same seed share their initialization, and 400 steps do not move them far from it."""
    from hubsae.eval.dictionary import composition_rate, random_unit_rows, unique_feature_curve

    def load(stem: str):
        return load_file(args.decoders / f"{stem}.safetensors")["W_dec"]

    decoders = {
        "BatchTopK seed 0": load("BatchTopK_full_seed0"),
        "OrtSAE seed 0": load("OrtSAE_full_seed0"),
        "OrtSAE modified seed 0": load("OrtSAE_mod_seed0"),
        "random unit rows": random_unit_rows(args.d_sae, D, seed=0),
    }
    partners = {
        "BatchTopK seed 0": ("BatchTopK seed 1", load("BatchTopK_full_seed1")),
        "OrtSAE seed 0": ("BatchTopK seed 1", load("BatchTopK_full_seed1")),
        "OrtSAE modified seed 0": ("BatchTopK seed 1", load("BatchTopK_full_seed1")),
        "random unit rows": ("other random rows", random_unit_rows(args.d_sae, D, seed=1)),
    }
    thresholds = (0.1, 0.2, 0.3, 0.4, 0.5)
    rows = []
    for name, W in decoders.items():
        partner, other = partners[name]
        curve = unique_feature_curve(W, other, thresholds)
        comp = composition_rate(W, steps=args.composition_steps, seed=0)
        rows.append([name, comp, partner, *(f"{curve[t]:.3f}" for t in thresholds)])
        logger.info("%s: composition %.4f, unique vs %s %s", name, comp, partner, curve)
    heads = ["decoder", "composition (meta-SAE EV)", "unique vs", *(f"unique < {t}" for t in thresholds)]
    print(f"meta-SAE: {args.composition_steps} steps, width F/4, k = 4")
    print(table(rows, heads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (20k cached tokens, F 1152, 1 seed)")
    parser.add_argument("--metrics", action="store_true", help="composition and unique features of the saved decoders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM")
    parser.add_argument("--composition-steps", type=int, default=300, help="meta-SAE training steps")
    parser.add_argument("--table", action="store_true", help="only print the table of the runs saved so far")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.n_tokens, args.d_sae, args.tokens, args.batch, args.seeds = 20_000, 1152, 8192, 256, [0]
    else:
        args.n_tokens, args.d_sae, args.tokens, args.batch = 240_000, 4608, 102_400, 256
    args.decoders = CACHE / ("ortsae-quick" if args.quick else "ortsae")
    args.decoders.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.metrics:
        dictionary_metrics(args)
    elif args.table:
        print_table(args)
    else:
        train_all(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
