"""Is mAND's dead-latent gap (docs/reproductions.md 1.1) hubsae's, or the method's at this scale?

Trains hubsae's KronSAE beside an independent dense KronSAE written from the listing in arXiv
2505.22255 v3 App. H (sqrt(ReLU(u) ReLU(v) + 1e-5) for every pair, so inactive pairs sit at
sqrt(eps) as in the listing; dense global TopK; AuxK over the dead post-latents, weight 1/32; the
App. A.1 / App. H init), on the same cached SmolLM2 activations, seed, token order and schedule
(`common.train`). If the two agree, hubsae's sparse path and its exact-zero inactive pairs are not
what keeps mAND's latents dead.

    nice -n 10 .venv/bin/python benchmarks/reproduce/kron_listing_check.py --tokens 25600 --seeds 0 1 2
"""

import argparse
import json
import math

import torch
from common import fvu, scale_to_sqrt_d, smollm2_activations, split, train
from torch import Tensor, nn

import hubsae

D, K = 576, 32


class ListingOutput:
    def __init__(self, reconstruction: Tensor, loss: Tensor, indices: Tensor, values: Tensor):
        self.reconstruction, self.loss, self.indices, self.values = reconstruction, loss, indices, values

    def active_latents(self, d_sae: int) -> Tensor:
        return self.indices[self.values > 0].unique()


class ListingKronSAE(nn.Module):
    """App. H's KronSAE, dense: every post-latent is scored, as in the paper's own code."""

    def __init__(self, d_sae: int, m: int, n: int, composition: str, eps: float = 1e-5):
        super().__init__()
        self.config = argparse.Namespace(d_sae=d_sae)  # what `common.train` reads
        self.h, self.m, self.n, self.composition, self.eps = d_sae // (m * n), m, n, composition, eps
        self.W_enc = nn.Parameter(torch.randn(D, self.h * (m + n)) / math.sqrt(2 * d_sae))
        self.b_enc = nn.Parameter(torch.zeros(self.h * (m + n)))
        factors = self.W_enc.detach().T.reshape(self.h, m + n, D)
        rows = (factors[:, :m, None, :] + factors[:, None, m:, :]).reshape(d_sae, D)  # P_i + Q_j
        self.W_dec = nn.Parameter(rows / rows.norm(dim=1, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(D))

    def post_latents(self, x: Tensor) -> Tensor:
        pre = (x @ self.W_enc + self.b_enc).reshape(len(x), self.h, self.m + self.n)
        u, v = pre[..., : self.m, None], pre[..., None, self.m :]
        z = torch.relu(u) * torch.relu(v)
        return (torch.sqrt(z + self.eps) if self.composition == "mand" else z).reshape(len(x), -1)

    def forward(self, x: Tensor, dead_mask: Tensor | None = None, **_) -> ListingOutput:
        z = self.post_latents(x)
        values, indices = z.topk(K, dim=-1)
        values = torch.relu(values)
        x_hat = torch.zeros_like(z).scatter(1, indices, values) @ self.W_dec + self.b_dec
        loss = (x - x_hat).pow(2).sum(-1).mean()
        if dead_mask is not None and dead_mask.any():  # Gao et al. AuxK, k_aux = d_in / 2
            dead = torch.where(dead_mask, z, torch.zeros_like(z))
            aux_values, aux_indices = dead.topk(min(D // 2, int(dead_mask.sum())), dim=-1)
            e_hat = torch.zeros_like(z).scatter(1, aux_indices, aux_values) @ self.W_dec
            loss = loss + ((x - x_hat).detach() - e_hat).pow(2).sum(-1).mean() / 32
        return ListingOutput(x_hat, loss, indices, values)

    def remove_gradient_parallel_to_decoder_directions(self) -> None:  # App. H renormalizes only at init
        pass

    def set_decoder_norm_to_unit_norm(self) -> None:
        pass


def build(kind: str, composition: str, d_sae: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "hubsae":
        config = hubsae.KronSAEConfig(d_in=D, d_sae=d_sae, k=K, num_heads=d_sae // 8, m=2, n=4, composition=composition)
        return hubsae.KronSAE(config)
    return ListingKronSAE(d_sae, 2, 4, composition)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=25_600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--compositions", nargs="+", default=["mand", "relu_prod"])
    args = parser.parse_args()
    train_x, test_x = scale_to_sqrt_d(*split(smollm2_activations(240_000)))
    results = []
    for composition in args.compositions:
        for seed in args.seeds:
            for kind in ("hubsae", "listing"):
                sae = build(kind, composition, args.d_sae, seed)
                run = train(sae, train_x, args.tokens, batch=256, seed=seed)
                row = dict(kind=kind, composition=composition, seed=seed, ev=1 - fvu(sae, test_x), alive=run.alive)
                results.append(row)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
