"""OrtSAE's chunked orthogonality penalty on decoder directions (arXiv 2509.22033 §3.3, eqs. 3-5).

Each step the F latents are split by a random permutation into K near-equal chunks; inside each
chunk every latent's nearest-neighbour cosine (signed, as in the paper) is squared and averaged:

    L_orth = (1/K) sum_k (1/|C_k|) sum_{i in C_k} ( max_{j in C_k, j != i} cos(W_i, W_j) )^2,
    cos(W_i, W_j) = <W_i, W_j> / max(||W_i|| ||W_j||, delta).

A chunk of c latents costs c^2 * d, so the whole penalty costs F * c * d: linear in F for a
fixed chunk size (the paper's K = ceil(F / 8192)). The total loss is L + gamma * L_orth with
gamma = 0.25; the paper's cheaper "modified" variant computes it every N-th step with gamma * N.
Units: gamma is in the paper's units, where the MSE averages over the d_in elements (OrtSAE
§4.1 trains with the BatchTopK code, whose MSE is `.pow(2).mean()`). hubsae's "mse" sums over them, so the penalty added to our
loss is gamma * d_in * L_orth: the same balance, and `gamma=0.25` is the paper's setting
(unscaled, 0.25 barely moved a decoder in docs/reproductions.md).

Function API (what the trainer calls):
    num_chunks_for(d_sae, chunk_size=8192) -> int
    orthogonality_penalty(W_dec, num_chunks, generator=None, delta=1e-8) -> scalar Tensor
    OrthogonalityPenalty(gamma, num_chunks=None, chunk_size=8192, every=1, delta=1e-8)
        .coefficient(step) -> float   # gamma * every on the steps where it runs, else 0.0
        .__call__(W_dec, step, generator=None) -> scalar Tensor | None  # gamma * every * d_in * L_orth
W_dec is (d_sae, d_in): one row per latent, the package's parameter vocabulary. The penalty works
on any architecture, since every SAE here stores its decoder directions that way.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["OrthogonalityPenalty", "num_chunks_for", "orthogonality_penalty", "chunk_max_cosine"]


def num_chunks_for(d_sae: int, chunk_size: int = 8192) -> int:
    """The paper's K(F) = ceil(F / chunk_size), at least 1."""
    if d_sae <= 0 or chunk_size <= 0:
        raise ValueError(f"d_sae and chunk_size must be positive, got d_sae={d_sae}, chunk_size={chunk_size}")
    return max(1, math.ceil(d_sae / chunk_size))


def chunk_max_cosine(W_cd: Tensor, delta: float = 1e-8) -> Tensor:
    """Signed nearest-neighbour cosine of each row of one chunk, excluding itself: (c,)."""
    norms_c = W_cd.norm(dim=-1)
    gram_cc = W_cd @ W_cd.T
    cos_cc = gram_cc / torch.clamp_min(norms_c[:, None] * norms_c[None, :], delta)
    eye = torch.eye(W_cd.shape[0], dtype=torch.bool, device=W_cd.device)
    return cos_cc.masked_fill(eye, float("-inf")).amax(dim=-1)


def orthogonality_penalty(
    W_dec: Tensor, num_chunks: int, generator: torch.Generator | None = None, delta: float = 1e-8
) -> Tensor:
    """L_orth of W_dec (d_sae, d_in) under one random partition into `num_chunks` chunks.

    Chunks are `torch.tensor_split` of a random permutation (sizes differ by at most 1), so each
    must hold at least 2 latents. The Gram blocks are computed in fp32 at least (bf16 cosines of
    near-parallel rows round to 1). Gradients flow through the norms as well (cos is scale-free).
    """
    d_sae = W_dec.shape[0]
    if not 1 <= num_chunks <= d_sae // 2:
        raise ValueError(
            f"num_chunks={num_chunks} must be between 1 and d_sae // 2 = {d_sae // 2} so that every chunk "
            "holds at least two latents"
        )
    W = W_dec if W_dec.dtype in (torch.float32, torch.float64) else W_dec.float()
    perm = torch.randperm(d_sae, generator=generator, device="cpu").to(W.device)
    per_chunk = [chunk_max_cosine(W[idx], delta).pow(2).mean() for idx in torch.tensor_split(perm, num_chunks)]
    return torch.stack(per_chunk).mean()


@dataclass
class OrthogonalityPenalty:
    """OrtSAE's penalty as a loss term: gamma * L_orth, optionally only every `every` steps.

    Args:
        gamma: the penalty's weight in the paper's units (0.25 in the paper); scaled by d_in to
            match hubsae's MSE, which sums over the d_in elements where the paper's averages.
        num_chunks: K; None means ceil(d_sae / chunk_size).
        chunk_size: latents per chunk used when num_chunks is None (8192 in the paper).
        every: compute the penalty only on steps with step % every == 0, weighted gamma * every
            (the paper's "modified" variant uses every=5), so its average weight stays gamma.
        delta: floor of the norm product in the cosine.
    """

    gamma: float = 0.25
    num_chunks: int | None = None
    chunk_size: int = 8192
    every: int = 1
    delta: float = 1e-8

    def __post_init__(self):
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.num_chunks is not None and self.num_chunks < 1:
            raise ValueError(f"num_chunks must be >= 1, got {self.num_chunks}")
        if self.chunk_size < 2:
            raise ValueError(f"chunk_size must be >= 2, got {self.chunk_size}")

    def chunks_for(self, d_sae: int) -> int:
        return self.num_chunks if self.num_chunks is not None else num_chunks_for(d_sae, self.chunk_size)

    def coefficient(self, step: int) -> float:
        """Weight at this step: gamma * every when the penalty runs, 0.0 when it is skipped."""
        return self.gamma * self.every if step % self.every == 0 else 0.0

    def __call__(self, W_dec: Tensor, step: int, generator: torch.Generator | None = None) -> Tensor | None:
        """gamma * every * d_in * L_orth (see the module docstring), or None on a skipped step."""
        weight = self.coefficient(step) * W_dec.shape[-1]
        if weight == 0.0:
            return None
        return weight * orthogonality_penalty(W_dec, self.chunks_for(W_dec.shape[0]), generator, self.delta)
