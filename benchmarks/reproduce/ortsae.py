"""OrtSAE vs BatchTopK on SmolLM2-135M activations: decoder geometry, FVU, L0, wall-clock, and the
two LLM-free dictionary metrics (arXiv 2509.22033 Table 1, Table 3, §4).

Scaled down for a CPU: residual stream after model.layers.10 (d = 576), Shakespeare corpus,
F = 8 d = 4608, k = 32, batch 512, every token once, AdamW with warmup + cosine (lr 8e-4: the
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
    return result


def train_all(args) -> None:
    data = scale_to_sqrt_d(*split(smollm2_activations(args.n_tokens)))
    results = {name: [run_arm(name, s, data, args) for s in args.seeds] for name in ARMS}
    base = [r["seconds"] for r in results["BatchTopK"]]
    rows = []
    for name, runs in results.items():
        cols = [mean_sd([r[c] for r in runs]) for c in ("MeanCosSim", "MeanCosSim at init", "FVU", "L0", "alive")]
        ratio = mean_sd([r["seconds"] / b for r, b in zip(runs, base, strict=True)], 2)
        rows.append([name, *cols, ratio])
    print(
        f"\n{args.tokens:,} tokens (batch {args.batch}), F={args.d_sae}, k={K}, gamma=0.25 (paper units), seeds {args.seeds}"
    )
    heads = ["SAE", "MeanCosSim", "MeanCosSim at init", "FVU (test)", "L0 (test)", "alive", "train time vs BatchTopK"]
    print(table(rows, heads))
    print(PAPER)


def dictionary_metrics(args) -> None:
    """Composition (a BatchTopK meta-SAE, dictionary F/4, k = 4, on the decoder rows: its EV) and
    unique features (max cosine to another SAE's rows < 0.2), with random-init decoders as controls."""
    from hubsae.eval.dictionary import composition_rate, unique_feature_fraction

    files = sorted(args.decoders.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no decoders in {args.decoders}: run without --metrics first")
    decoders = {f.stem: load_file(f)["W_dec"] for f in files}
    for seed in args.seeds:
        decoders[f"random-init_seed{seed}"] = batchtopk(args.d_sae, seed).W_dec.detach()
    rows = []
    for name, W in decoders.items():
        other = "BatchTopK_full" if not name.startswith("BatchTopK") else "OrtSAE_full"
        seed = name.rsplit("seed", 1)[1]
        partner = decoders.get(f"{other}_seed{seed}")
        unique = unique_feature_fraction(W, partner) if partner is not None else float("nan")
        rows.append([name, composition_rate(W), unique])
    print(table(rows, ["decoder", "composition (meta-SAE EV)", "unique vs the other method, same seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (20k cached tokens, F 1152, 1 seed)")
    parser.add_argument("--metrics", action="store_true", help="composition and unique features of the saved decoders")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.n_tokens, args.d_sae, args.tokens, args.batch, args.seeds = 20_000, 1152, 8192, 256, [0]
    else:
        args.n_tokens, args.d_sae, args.tokens, args.batch, args.seeds = 240_000, 4608, 204_800, 512, [0, 1, 2]
    args.decoders = CACHE / ("ortsae-quick" if args.quick else "ortsae")
    args.decoders.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dictionary_metrics(args) if args.metrics else train_all(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
