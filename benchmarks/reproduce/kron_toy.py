"""KronSAE §5.1 / App. B toy: do SAE decoders recover the correlation structure of the features?

Ground truth (arXiv 2505.22255, our reading of App. B): F = 256 features with a correlation matrix
S from a factor model (blocks of correlated features, optionally unequal blocks and couplings
between blocks); a sample is x_bar = L TopK_kdata(ReLU(g)), g ~ N(0, I_F), S = L L^T. A
compressing autoencoder x_hat = ReLU(W^T W x_bar + b), W (64 x 256), learns an embedding; SAEs
(F = 256, k = 8) are trained on W x_bar with the shared loop (AdamW, warmup + cosine, fresh
samples, no repeats). Metric: RV(S, C) = tr(SC) / sqrt(tr(S^2) tr(C^2)), C = the decoder Gram
matrix in the ground truth's order (for the AE: C = W^T W).

Matching: each latent is assigned one-to-one to a ground-truth feature by an optimal assignment
(Hungarian, `hungarian` below: scipy is not in the package's environment) on |cos| between
decoder rows and the AE's feature directions. The paper uses a quadratic assignment (FAQ) that
maximizes RV itself; that inflates every RV, so we do not use it. Because even a random matching
of a decoder's Gram matrix to S has a positive RV (both have a positive diagonal), every RV is
reported minus that floor (mean over 20 random permutations of the same decoder), and untrained
decoders (same init) are the control for structure that comes from the initialization.

Run: nice -n 10 .venv/bin/python benchmarks/reproduce/kron_toy.py [--quick]
"""

import argparse
import logging
import statistics
import time

import numpy as np
import torch
from common import fvu, mean_sd, table, train

import hubsae

logger = logging.getLogger(__name__)
PAPER = {"AE": "0.598 (0.59±0.17)", "TopK": "0.157 (0.12±0.02)", "Kron h=2,m=4,n=32": "0.514 (0.22±0.07)"}
PAPER.update(
    {"Kron h=4,m=2,n=32": "(0.30±0.12)", "Kron h=4,m=8,n=8": "(0.23±0.08)", "Kron h=8,m=2,n=16": "(0.17±0.04)"}
)
KRON = [(2, 4, 32), (4, 2, 32), (4, 8, 8), (8, 2, 16)]
F, D, K = 256, 64, 8


def block_sizes(kind: str, gen: torch.Generator) -> list[int]:
    if kind.startswith("equal"):
        size = int(kind.split("-")[1])
        return [size] * (F // size)
    sizes, left = [], F
    while left:
        size = min(left, [4, 8, 16, 32][int(torch.randint(0, 4, (1,), generator=gen))])
        sizes.append(size)
        left -= size
    return sizes


def covariance(sizes: list[int], rhos: list[float], coupling: float, gen: torch.Generator) -> torch.Tensor:
    """Factor-model correlation matrix (positive definite by construction): block b loads sqrt(rho_b)
    on its factor; with `coupling` c, pairs of blocks share a fraction c of their factor's variance."""
    n_blocks = len(sizes)
    pair = torch.randperm(n_blocks, generator=gen) // 2 if coupling > 0 else None
    loadings = torch.zeros(F, 2 * n_blocks)
    start = 0
    for b, (size, rho) in enumerate(zip(sizes, rhos, strict=True)):
        rows = slice(start, start + size)
        loadings[rows, b] = (rho * (1 - coupling)) ** 0.5
        if pair is not None:
            loadings[rows, n_blocks + pair[b]] = (rho * coupling) ** 0.5
        start += size
    S = loadings @ loadings.T
    return S + torch.diag(1 - S.diagonal())


def make_setup(name: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)
    kind, rho, coupling = SETUPS[name]
    sizes = block_sizes(kind, gen)
    rhos = [rho] * len(sizes) if rho else (0.3 + 0.5 * torch.rand(len(sizes), generator=gen)).tolist()
    return covariance(sizes, rhos, coupling, gen)


SETUPS = {  # name: (blocks, rho (None: per block U(0.3, 0.8)), coupling between paired blocks)
    "equal 8, rho 0.6": ("equal-8", 0.6, 0.0),
    "equal 16, rho 0.5": ("equal-16", 0.5, 0.0),
    "unequal 4-32, rho U(.3,.8)": ("unequal", None, 0.0),
    "unequal + couplings 0.3": ("unequal", None, 0.3),
}


def sample(L: torch.Tensor, n: int, k_data: int, gen: torch.Generator) -> torch.Tensor:
    g = torch.relu(torch.randn(n, F, generator=gen))
    vals, idx = g.topk(k_data, dim=-1)
    return torch.zeros_like(g).scatter_(-1, idx, vals) @ L.T  # rows: x_bar = L s


def rv(S: torch.Tensor, C: torch.Tensor) -> float:
    return ((S * C).sum() / torch.sqrt((S * S).sum() * (C * C).sum())).item()


def hungarian(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost perfect assignment of a square matrix (the O(n^3) shortest-augmenting-path
    Hungarian method, vectorized over columns); returns col_of_row."""
    n = cost.shape[0]
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    row_of_col, way = np.zeros(n + 1, dtype=int), np.zeros(n + 1, dtype=int)
    for i in range(1, n + 1):
        row_of_col[0], j0 = i, 0
        minv, used = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = row_of_col[j0]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better], way[1:][better] = reduced[better], j0
            masked = np.where(free, minv[1:], np.inf)
            j1 = int(masked.argmin()) + 1
            delta = masked[j1 - 1]
            u[row_of_col[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if row_of_col[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            row_of_col[j0] = row_of_col[j1]
            j0 = j1
    col_of_row = np.zeros(n, dtype=int)
    col_of_row[row_of_col[1:] - 1] = np.arange(n)
    return col_of_row


def matched_rv(W_dec: torch.Tensor, S: torch.Tensor, W: torch.Tensor, gen: torch.Generator) -> tuple[float, float]:
    """(RV after the |cos| assignment, the random-matching floor of the same decoder)."""
    cos = torch.nn.functional.normalize(W.T, dim=-1) @ torch.nn.functional.normalize(W_dec, dim=-1).T
    perm = torch.from_numpy(hungarian(-cos.abs().double().numpy()))  # perm[j]: the latent of feature j
    C = W_dec[perm] @ W_dec[perm].T
    floor = [rv(S, W_dec[p] @ W_dec[p].T) for p in (torch.randperm(F, generator=gen) for _ in range(20))]
    return rv(S, C), statistics.mean(floor)


def train_ae(x_bar: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    W = torch.nn.Parameter(torch.randn(D, F, generator=gen) / D**0.5)
    b = torch.nn.Parameter(torch.zeros(F))
    opt = torch.optim.Adam([W, b], lr=1e-3)
    for step in range(steps):
        x = x_bar[step * 256 % (len(x_bar) - 256) :][:256]
        loss = (torch.relu(x @ W.T @ W + b) - x).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach()


def run_setup(name: str, seed: int, steps: int, k_data: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    S = make_setup(name, seed)
    x_bar = sample(torch.linalg.cholesky(S), steps * 256, k_data, gen)
    W = train_ae(x_bar, steps, seed)
    h = x_bar @ W.T  # what the SAEs see, (N, 64)
    C = W.T @ W
    floor = statistics.mean(rv(S, C[p][:, p]) for p in (torch.randperm(F, generator=gen) for _ in range(20)))
    results = {"AE": rv(S, C) - floor, "AE, raw RV": rv(S, C)}
    torch.manual_seed(seed)
    saes = {"TopK": hubsae.TopKSAE(hubsae.TopKSAEConfig(d_in=D, d_sae=F, k=K))}
    for hh, m, n in KRON:
        cfg = hubsae.KronSAEConfig(d_in=D, d_sae=F, k=K, num_heads=hh, m=m, n=n)
        saes[f"Kron h={hh},m={m},n={n}"] = hubsae.KronSAE(cfg)
    for model, sae in saes.items():
        got, base = matched_rv(sae.W_dec.detach(), S, W, gen)
        results[f"{model}, untrained"] = got - base
        train(sae, h, steps * 256, batch=256, lr=1e-3, seed=seed)
        got, base = matched_rv(sae.W_dec.detach(), S, W, gen)
        results[model], results[f"{model}, raw RV"], results[f"{model}, FVU"] = got - base, got, fvu(sae, h[-8192:])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one setup, one seed, 100 steps")
    parser.add_argument("--steps", type=int, default=1000, help="steps of 256 samples (AE and each SAE)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--k-data", type=int, default=8, help="active ground-truth features before mixing by L")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setups = list(SETUPS)[:1] if args.quick else list(SETUPS)
    steps, seeds = (100, 1) if args.quick else (args.steps, args.seeds)
    start = time.perf_counter()
    for name in setups:
        per_seed = [run_setup(name, seed, steps, args.k_data) for seed in range(seeds)]
        rows = []
        for model in ["AE", "TopK", *(f"Kron h={h},m={m},n={n}" for h, m, n in KRON)]:
            cols = [f"{model}{suffix}" for suffix in ("", ", untrained", ", raw RV", ", FVU")]
            rows.append([model, *(mean_sd([r[c] for r in per_seed]) if c in per_seed[0] else "-" for c in cols)])
            rows[-1].append(PAPER.get(model, "-"))
        print(f"\nsetup {name!r}: {seeds} seeds, {steps} steps of 256 samples (mean ± sd over seeds)")
        heads = ["model", "RV - floor", "untrained: RV - floor", "raw RV", "FVU", "paper raw RV: Fig. 5 (Table 7)"]
        print(table(rows, heads))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
