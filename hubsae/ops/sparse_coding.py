"""A TopK / BatchTopK SAE training forward whose backward never touches a dense (N, d_sae) tensor.

Only the encoder's forward GEMM is dense. The top-k (+ ReLU) leaves (token, latent, value)
pairs; the decoder is a gather-sum over them (`embedding_bag`), and so is AuxK's decoder over
the dead latents' top-k_aux. The gradient of every selected pre-activation is the dot product
of its token's output gradient with its decoder row (sampled dense-dense matmul), so the
encoder and decoder weight gradients are sparse-dense matmuls over the pairs: O(pairs * d_in)
instead of O(N * d_sae * d_in). The dense pre-activation buffer is reused in place for the
returned (detached) dense features, so one (N, d_sae) tensor is allocated per step.

Sparse kernels (MKL on the CPU, cuSPARSE on CUDA) take float32/float64; half-precision
parameters are upcast inside the backward and the gradients cast back.
"""

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .select import topk_flat, topk_rows


@dataclass
class Pairs:
    """Selected (token, latent, value) pairs in token-major order, as CSR pieces of an (N, F) matrix."""

    crow: Tensor  # (N + 1,) row pointers
    cols: Tensor  # (P,) latent of each pair, sorted within a token
    values: Tensor  # (P,) ReLU'd pre-activation

    def rows(self) -> Tensor:
        counts = self.crow.diff()
        return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)


def _csr(crow: Tensor, cols: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": said once per process, not ours to show
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, values, size=size, check_invariants=False)


def _sparse_dtype(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def per_token_pairs(pre: Tensor, k: int, cols_map: Tensor | None = None) -> Pairs:
    """Top-k of each row of pre (N, n), ReLU'd; `cols_map` renames local columns (AuxK's dead subset)."""
    values, cols = topk_rows(pre, k)
    cols, order = cols.sort(dim=-1)
    values = torch.relu(values.gather(1, order))
    if cols_map is not None:
        cols = cols_map[cols]
    n_tok = pre.shape[0]
    crow = torch.arange(0, n_tok * k + 1, k, device=pre.device)
    return Pairs(crow, cols.flatten(), values.flatten())


def batch_pairs(pre: Tensor, k: int) -> Pairs:
    """BatchTopK: the k * N largest ReLU'd pre-activations of the whole (N, F) batch."""
    n_tok, width = pre.shape
    n_keep = min(k * n_tok, pre.numel())
    values, flat = topk_flat(pre.flatten(), n_keep)
    flat, order = flat.sort()
    rows, cols = flat // width, flat % width
    crow = torch.zeros(n_tok + 1, dtype=torch.int64, device=pre.device)
    crow[1:] = torch.bincount(rows, minlength=n_tok).cumsum(0)
    return Pairs(crow, cols, torch.relu(values[order]))


def _decode(pairs: Pairs, W_dec: Tensor) -> Tensor:
    return nn.functional.embedding_bag(
        pairs.cols, W_dec, pairs.crow[:-1], mode="sum", per_sample_weights=pairs.values.to(W_dec.dtype)
    )


def _dense_features(pre: Tensor, pairs: Pairs) -> Tensor:
    """Overwrite the no-longer-needed pre-activation buffer with the dense features."""
    features = pre.zero_()
    features.view(-1).index_put_((pairs.rows() * pre.shape[1] + pairs.cols,), pairs.values.to(pre.dtype))
    return features


class SparseTopKCode(torch.autograd.Function):
    """(x, W_enc, b_enc, W_dec, b_dec | None) -> (decoded, aux_decoded | None, features, kept values).

    decoded = sum over a token's pairs of value * W_dec[latent] (b_dec not added);
    aux_decoded is the same over the dead latents' top-k_aux (None without dead latents).
    features (N, F) and kept values are detached. b_dec is subtracted from x before encoding
    when given.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, k: int, batch: bool, dead_cols: Tensor | None, k_aux: int):
        x_in = x - b_dec if b_dec is not None else x
        pre = torch.addmm(b_enc, x_in, W_enc)  # (N, F), the only dense GEMM
        main = batch_pairs(pre, k) if batch else per_token_pairs(pre, k)
        aux = None
        if dead_cols is not None and dead_cols.numel() > 0:
            aux = per_token_pairs(pre.index_select(1, dead_cols), min(k_aux, dead_cols.numel()), dead_cols)
        decoded = _decode(main, W_dec)
        aux_decoded = _decode(aux, W_dec) if aux is not None else None
        features = _dense_features(pre, main)
        kept = main.values.clone()  # an output of its own, so ctx holds no reference to an output
        ctx.mark_non_differentiable(features, kept)
        ctx.save_for_backward(x_in, W_enc, W_dec)
        ctx.pairs = (main, aux)
        ctx.has_b_dec = b_dec is not None
        return decoded, aux_decoded, features, kept

    @staticmethod
    def backward(ctx, g_dec, g_aux, _g_features, _g_values):
        x_in, W_enc, W_dec = ctx.saved_tensors
        main, aux = ctx.pairs
        n_tok, width = x_in.shape[0], W_dec.shape[0]
        W_dec32, x32 = _sparse_dtype(W_dec), _sparse_dtype(x_in)
        groups = [(main, _sparse_dtype(g_dec))]
        if aux is not None and g_aux is not None:
            groups.append((aux, _sparse_dtype(g_aux)))
        d_pre = [_pre_grad(p, g, W_dec32, n_tok) for p, g in groups]
        dW_enc_T, dW_dec = _weight_grads(groups, d_pre, x32, n_tok, width)
        cols = torch.cat([p.cols for p, _ in groups])
        db_enc = torch.zeros(width, dtype=x32.dtype, device=x_in.device).index_add_(0, cols, torch.cat(d_pre))
        grad_x = grad_b_dec = None
        if ctx.needs_input_grad[0]:  # only when the input itself is trained through (rare)
            W_enc_T = _sparse_dtype(W_enc).t()
            grad_x = sum(
                _csr(p.crow, p.cols, dp, (n_tok, width)) @ W_enc_T for (p, _), dp in zip(groups, d_pre, strict=True)
            )
            grad_x = grad_x.to(x_in.dtype)
        if ctx.has_b_dec and ctx.needs_input_grad[4]:
            # x_in = x - b_dec: d b_dec = -sum_tokens d x_in = -W_enc @ (column sums of d pre) = -W_enc @ db_enc
            grad_b_dec = -(_sparse_dtype(W_enc) @ db_enc).to(W_enc.dtype)
        return (
            grad_x,
            dW_enc_T.t().to(W_enc.dtype),
            db_enc.to(W_enc.dtype),
            dW_dec.to(W_dec.dtype),
            grad_b_dec,
            None,
            None,
            None,
            None,
        )


def _pre_grad(pairs: Pairs, g_out: Tensor, W_dec: Tensor, n_tok: int) -> Tensor:
    """d loss / d pre at each pair: (g_out[token] . W_dec[latent]) where the ReLU passed, else 0."""
    pattern = _csr(pairs.crow, pairs.cols, pairs.values.to(g_out.dtype), (n_tok, W_dec.shape[0]))
    dots = torch.sparse.sampled_addmm(pattern, g_out, W_dec.t(), beta=0.0).values()
    return dots * (pairs.values > 0)


def _weight_grads(groups, d_pre: list[Tensor], x: Tensor, n_tok: int, width: int) -> tuple[Tensor, Tensor]:
    """(dW_enc^T, dW_dec), each (F, d_in): sparse (F, G*N) matrices times stacked dense (G*N, d_in).

    Group g's tokens become columns g*N .. g*N + N - 1, so a latent chosen by a token in both the
    main and the AuxK selection stays two separate entries (CSR columns must be unique per row).
    """
    rows = torch.cat([p.rows() + i * n_tok for i, (p, _) in enumerate(groups)])
    cols = torch.cat([p.cols for p, _ in groups])
    n_cols = len(groups) * n_tok
    order = (cols * n_cols + rows).sort().indices  # latent-major, tokens ascending within a latent
    crow = torch.zeros(width + 1, dtype=torch.int64, device=x.device)
    crow[1:] = torch.bincount(cols, minlength=width).cumsum(0)
    t_rows = rows[order]
    grad_pre = _csr(crow, t_rows, torch.cat(d_pre)[order], (width, n_cols))
    values = torch.cat([p.values for p, _ in groups]).to(x.dtype)[order]
    acts = _csr(crow, t_rows, values, (width, n_cols))
    x_stack = x if len(groups) == 1 else x.repeat(len(groups), 1)
    g_stack = torch.cat([g for _, g in groups]) if len(groups) > 1 else groups[0][1]
    return grad_pre @ x_stack, acts @ g_stack


def auxk_from_decoded(residual: Tensor, aux_decoded: Tensor | None) -> Tensor:
    """AuxK (Gao et al. 2024, §A.2) from the dead latents' decoded sum; same value as `saes.base.auxk_loss`.

    ||e - e_hat||^2 / ||e - mean(e)||^2 with e the detached residual; 0 without dead latents.
    """
    if aux_decoded is None:
        return residual.new_zeros(())
    e = residual.detach()
    denom = (e - e.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return (e - aux_decoded).pow(2).sum(-1).mean() / denom


def sparse_topk_code(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    W_dec: Tensor,
    b_dec: Tensor | None,
    k: int,
    batch: bool = False,
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Functional entry point of `SparseTopKCode` on flattened x (N, d_in); see its docstring."""
    dead_cols = None
    if dead_mask is not None and k_aux > 0:
        dead_cols = dead_mask.nonzero().squeeze(1)
    return SparseTopKCode.apply(x, W_enc, b_enc, W_dec, b_dec, k, batch, dead_cols, k_aux)


__all__ = ["Pairs", "auxk_from_decoded", "SparseTopKCode", "sparse_topk_code", "per_token_pairs", "batch_pairs"]
