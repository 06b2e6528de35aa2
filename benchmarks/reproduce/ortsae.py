"""OrtSAE vs BatchTopK on SmolLM2-135M activations: decoder geometry, FVU, wall-clock (OrtSAE Table 1, 3).

Scaled down for a CPU: residual stream after model.layers.10 (d = 576), fortunes corpus,
F = 4 d = 2304, k = 32, the same BatchTopK base, Adam lr 8e-4, batch 256, same data order.
OrtSAE adds gamma * L_orth. The paper's gamma = 0.25 weighs L_orth against an MSE averaged over
the d elements (the BatchTopK repo's `.pow(2).mean()`); hubsae's MSE sums over d, so
OrthogonalityPenalty scales its gamma (paper units, --gamma 0.25) by d. The paper's K = ceil(F / 8192) gives one
chunk at our F; we use K = 4 (chunk 576 = F/4, closer to the paper's F/8 chunk fraction at F=65k)
and also the "modified" every-5-steps variant with gamma * 5. MeanCosSim = mean over latents of
the largest cosine to another decoder row (eq. 6); FVU pooled, on a held-out 10%.

Run: .venv/bin/python benchmarks/reproduce/ortsae.py [--steps 400]
"""

import argparse

import torch
from common import fvu, mean_l0, mean_nn_cosine, scale_to_sqrt_d, smollm2_activations, split, table, train

import hubsae
from hubsae.train.orthogonality import OrthogonalityPenalty

D, F, K = 576, 2304, 32


def batchtopk() -> hubsae.BatchTopKSAE:
    torch.manual_seed(0)
    return hubsae.BatchTopKSAE(hubsae.BatchTopKSAEConfig(d_in=D, d_sae=F, k=K))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--gamma", type=float, default=0.25, help="in the paper's units (scaled by d_in inside)")
    args = parser.parse_args()
    train_x, test_x = scale_to_sqrt_d(*split(smollm2_activations(10, 60000)))
    runs = {
        "BatchTopK": None,
        f"OrtSAE (K={args.chunks}, every step)": OrthogonalityPenalty(gamma=args.gamma, num_chunks=args.chunks),
        f"OrtSAE modified (K={args.chunks}, every 5, gamma x 5)": OrthogonalityPenalty(
            gamma=args.gamma, num_chunks=args.chunks, every=5
        ),
    }
    rows, base_seconds = [], None
    for name, penalty in runs.items():
        sae = batchtopk()
        gen = torch.Generator().manual_seed(1)
        extra = None if penalty is None else (lambda step, s=sae, p=penalty, g=gen: p(s.W_dec, step, generator=g))
        seconds = train(sae, train_x, args.steps, batch=256, lr=8e-4, extra_loss=extra)
        base_seconds = base_seconds or seconds
        rows.append([name, mean_nn_cosine(sae), fvu(sae, test_x), mean_l0(sae, test_x), seconds / base_seconds])
    print(f"{args.steps} steps x 256 tokens, F={F}, k={K}, gamma={args.gamma}")
    print(table(rows, ["SAE", "MeanCosSim", "FVU (test)", "L0", "wall-clock vs BatchTopK"]))
    print(
        "paper (Gemma-2-2B L20, F=65k, L0=70, 500M tokens): MeanCosSim BatchTopK 0.354, OrtSAE 0.112 (2.7x lower at L12);"
        " EV 0.843 vs 0.836 (FVU 0.157 vs 0.164); time 1.11x (K=8, every 5), 1.04x (K=64)"
    )


if __name__ == "__main__":
    main()
