"""Sparse feature codes at a hookpoint: encode once, edit a few latents, decode only what changed.

Every SAE gives its active latents through `encode_sparse` (the architecture contract), so TopK-style
SAEs build no (..., d_sae) tensor after the encoder GEMM. Decoding is a gather-sum over the active
rows of W_dec (`saes.sparse.decode_rows`): O(k * d_in) a token instead of O(d_sae * d_in).
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..saes.base import SAE
from ..saes.sparse import SparseCode, decode_rows


@dataclass
class SparseFeatures:
    """Feature activations kept sparse: `indices` and `values`, each (..., k).

    Slots beyond a token's active count hold value 0 (their index is meaningless), so
    `to_dense()` equals `sae.encode(x)` exactly. `k` is the SAE's k for TopK SAEs, else the
    largest active count in the batch.
    """

    indices: Tensor
    values: Tensor
    d_sae: int

    def to_dense(self) -> Tensor:
        """(..., d_sae) dense features."""
        return SparseCode(self.indices, self.values).to_dense(self.d_sae)

    def active(self, *position: int) -> tuple[Tensor, Tensor]:
        """(indices, values) of the nonzero features of one token, largest first, e.g. `active(b, t)`."""
        idx, val = self.indices[position], self.values[position]
        keep = val != 0
        idx, val = idx[keep], val[keep]
        order = val.abs().argsort(descending=True)
        return idx[order], val[order]

    @staticmethod
    def cat(parts: list["SparseFeatures"], dim: int = -2) -> "SparseFeatures":
        """Concatenate along a token dimension (e.g. the prefill and each decode step of generate())."""
        if not parts:
            raise ValueError("nothing to concatenate: no forward pass ran under record()")
        k = max(p.indices.shape[-1] for p in parts)
        pad = [_pad_slots(p, k) for p in parts]
        return SparseFeatures(
            torch.cat([i for i, _ in pad], dim=dim), torch.cat([v for _, v in pad], dim=dim), parts[0].d_sae
        )


def _pad_slots(part: SparseFeatures, k: int) -> tuple[Tensor, Tensor]:
    extra = k - part.indices.shape[-1]
    if extra == 0:
        return part.indices, part.values
    return nn.functional.pad(part.indices, (0, extra)), nn.functional.pad(part.values, (0, extra))


@dataclass
class Code:
    """A sparse code plus what is needed to map decoder outputs back into the model's units."""

    features: SparseFeatures
    stats: object  # the SAE's normalization statistics (None unless input_norm="token")
    skip: Tensor | None = None  # a skip transcoder's x W_skip (normalized units), part of its output


def encode(sae: SAE, x: Tensor) -> Code:
    """The SAE's features of x (..., d_in), sparse; identical to `sae.encode(x)` once densified."""
    normalized, stats = (
        sae.normalize_input(x) if sae.config.input_norm == "token" or sae.config.skip_connection else (x, None)
    )
    indices, values = sae.encode_sparse(x)
    skip = sae.skip_term(normalized) if sae.config.skip_connection else None
    return Code(SparseFeatures(indices, values, sae.config.d_sae), stats, skip)


def decode_linear(sae: SAE, indices: Tensor, values: Tensor) -> Tensor:
    """sum_j values_j * W_dec[indices_j] per token, in the SAE's normalized units, no bias: (..., d_out)."""
    return decode_rows(indices, values, sae.W_dec)


def reconstruct(sae: SAE, code: Code) -> Tensor:
    """x_hat (a transcoder: y_hat) in the model's units (equals `sae(x).reconstruction` up to float rounding)."""
    f = code.features
    out = decode_linear(sae, f.indices, f.values) + sae.b_dec
    return sae.denormalize(out if code.skip is None else out + code.skip, code.stats)


def to_model_units(sae: SAE, delta: Tensor, stats: object) -> Tensor:
    """A change of the normalized reconstruction, as a change of the model's activation.

    `denormalize` is affine, so its linear part is denormalize(delta) - denormalize(0); exact zeros
    stay zeros.
    """
    return sae.denormalize(delta, stats) - sae.denormalize(torch.zeros_like(delta), stats)


def unit_directions(sae: SAE, features: Tensor) -> Tensor:
    """Unit-norm decoder rows of `features`, (n, d_in): the directions in the model's activation space.

    The SAE's input normalization scales every direction by a positive factor per token, so the
    unit rows of W_dec are the model-space directions for every `input_norm`.
    """
    rows = sae.W_dec[features]
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).eps)
