"""A TopK / BatchTopK SAE training forward whose backward never touches a dense (N, d_sae) tensor.

Only the encoder's forward GEMM is dense. The top-k (+ ReLU) leaves (token, latent, value)
pairs; the decoder is a gather-sum over them (`embedding_bag`). The gradient of a selected
pre-activation is the dot product of its token's output gradient with its decoder row
(embedding_bag's own per-sample-weight backward kernel), and the weight gradients are
gather-sums again, over the pairs sorted by latent:

    dW_dec[f]  = sum over pairs (t, f) of value * g_out[t]      = embedding_bag(tokens, g_out)
    dW_enc[:, f] = sum over pairs (t, f) of d_pre * x[t]        = embedding_bag(tokens, x)

O(pairs * d_in) instead of O(N * d_sae * d_in), with the same fused kernels on CPU and CUDA and
no torch.sparse. AuxK's top-k_aux over the dead latents is a dense block over the dead columns
only (GEMMs of width n_dead, see `AuxBlock`). The dense pre-activation buffer is reused in place for the returned (detached)
dense features, so one (N, d_sae) tensor is allocated per step. Half-precision backward
arithmetic is done in float32 and the gradients cast back.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .select import topk_flat, topk_rows

SUM = 0  # embedding_bag's mode code for "sum"


@dataclass
class Pairs:
    """Selected (token, latent, value) pairs in token-major order (CSR pieces of an (N, F) matrix)."""

    crow: Tensor  # (N + 1,) start of each token's pairs
    rows: Tensor  # (P,) token of each pair
    cols: Tensor  # (P,) latent of each pair
    values: Tensor  # (P,) ReLU'd pre-activation
    k: int | None = None  # every token has k pairs (per-token TopK); None for BatchTopK


def _acc(t: Tensor) -> Tensor:
    """float32 for the backward's accumulations when t is half precision."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def argsort_ints(values: Tensor) -> Tensor:
    """Stable argsort of a 1-D integer tensor.

    On the CPU through numpy: torch's CPU sort opens many short parallel regions, each of which
    stalls until a second core is free when other processes share the machine (measured on
    65k pairs with 2 busy cores: 280 ms for torch.sort, 6 ms for numpy's single-threaded sort).
    """
    if values.device.type == "cpu":
        return torch.from_numpy(np.argsort(values.numpy(), kind="stable"))
    return values.argsort(stable=True)


def per_token_pairs(pre: Tensor, k: int, cols_map: Tensor | None = None) -> Pairs:
    """Top-k of each row of pre (N, n), ReLU'd; `cols_map` renames local columns (AuxK's dead subset)."""
    values, cols = topk_rows(pre, k)
    values = torch.relu(values)
    if cols_map is not None:
        cols = cols_map[cols]
    n_tok = pre.shape[0]
    crow = torch.arange(0, n_tok * k + 1, k, device=pre.device)
    rows = torch.arange(n_tok, device=pre.device).unsqueeze(1).expand(n_tok, k).reshape(-1)
    return Pairs(crow, rows, cols.flatten(), values.flatten(), k)


def batch_pairs(pre: Tensor, k: int) -> Pairs:
    """BatchTopK: the k * N largest ReLU'd pre-activations of the whole (N, F) batch."""
    n_tok, width = pre.shape
    n_keep = min(k * n_tok, pre.numel())
    values, flat = topk_flat(pre.flatten(), n_keep)
    order = argsort_ints(flat)
    flat = _take(flat, order)
    rows, cols = flat // width, flat % width
    crow = torch.zeros(n_tok + 1, dtype=torch.int64, device=pre.device)
    crow[1:] = torch.bincount(rows, minlength=n_tok).cumsum(0)
    return Pairs(crow, rows, cols, torch.relu(_take(values, order)))


def _decode(pairs: Pairs, W_dec: Tensor) -> Tensor:
    return _gather_sum(pairs.cols, pairs.crow, W_dec, pairs.values.to(W_dec.dtype))


def _dense_features(pre: Tensor, pairs: Pairs) -> Tensor:
    """Overwrite the no-longer-needed pre-activation buffer with the dense features."""
    features = pre.zero_()
    values = pairs.values.to(pre.dtype)
    if pairs.k is not None:  # one scatter, no flat index to build
        return features.scatter_(1, pairs.cols.view(-1, pairs.k), values.view(-1, pairs.k))
    features.view(-1).index_put_((pairs.rows * pre.shape[1] + pairs.cols,), values)
    return features


@dataclass
class AuxBlock:
    """AuxK's selection as a dense block over the dead latents only: acts (N, n_dead).

    k_aux is large (d_in / 2 by default) and often covers most dead latents, so GEMMs over the
    dead columns beat gathers over N * k_aux pairs; nothing spans all d_sae latents.
    """

    dead_cols: Tensor  # (n_dead,)
    acts: Tensor  # (N, n_dead) ReLU'd top-k_aux pre-activations of the dead latents, zeros elsewhere


def aux_block(pre: Tensor, dead_cols: Tensor, k_aux: int) -> AuxBlock:
    pre_dead = pre.index_select(1, dead_cols)  # (N, n_dead)
    values, local = topk_rows(pre_dead, min(k_aux, dead_cols.numel()))
    acts = torch.zeros_like(pre_dead).scatter_(1, local, torch.relu(values))
    return AuxBlock(dead_cols, acts)


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
        pre = (x_in @ W_enc).add_(b_enc)  # (N, F), the only dense GEMM; bitwise the plain path's
        main = batch_pairs(pre, k) if batch else per_token_pairs(pre, k)
        aux = aux_block(pre, dead_cols, k_aux) if dead_cols is not None and dead_cols.numel() > 0 else None
        decoded = _decode(main, W_dec)
        aux_decoded = aux.acts.to(W_dec.dtype) @ W_dec.index_select(0, aux.dead_cols) if aux is not None else None
        features = _dense_features(pre, main)
        kept = main.values.clone()  # an output of its own, so ctx holds no reference to an output
        ctx.mark_non_differentiable(features, kept)
        ctx.save_for_backward(x_in, W_enc, W_dec)
        ctx.pairs = (main, aux)
        ctx.has_b_dec = b_dec is not None
        return decoded, aux_decoded, features, kept

    @staticmethod
    @once_differentiable
    def backward(ctx, g_dec, g_aux, _g_features, _g_values):
        x_in, W_enc, W_dec = ctx.saved_tensors
        main, aux = ctx.pairs
        x_acc, W_dec_acc = _acc(x_in), _acc(W_dec)
        d_pre = _pre_grad(main, _acc(g_dec), W_dec_acc)
        dW_enc_T, dW_dec = _weight_grads(main, d_pre, x_acc, _acc(g_dec), W_dec.shape[0])
        db_enc = d_pre.new_zeros(W_dec.shape[0]).index_add_(0, main.cols, d_pre)
        d_aux = None
        if aux is not None and g_aux is not None:
            d_aux = _aux_grads(aux, _acc(g_aux), x_acc, W_dec_acc, dW_enc_T, dW_dec, db_enc)
        grad_x = grad_b_dec = None
        if ctx.needs_input_grad[0]:  # only when the input itself is trained through (rare)
            W_enc_acc = _acc(W_enc)
            grad_x = _gather_sum(main.cols, main.crow, W_enc_acc.t().contiguous(), d_pre)
            if d_aux is not None:
                grad_x += d_aux @ W_enc_acc.index_select(1, aux.dead_cols).t()
            grad_x = grad_x.to(x_in.dtype)
        if ctx.has_b_dec and ctx.needs_input_grad[4]:
            # x_in = x - b_dec: d b_dec = -sum_tokens d x_in = -W_enc @ (column sums of d pre) = -W_enc @ db_enc
            grad_b_dec = -(_acc(W_enc) @ db_enc).to(W_enc.dtype)
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


def _gather_sum(indices: Tensor, crow: Tensor, table: Tensor, weights: Tensor) -> Tensor:
    """out[i] = sum over j in [crow[i], crow[i+1]) of weights[j] * table[indices[j]]."""
    return nn.functional.embedding_bag(indices, table, crow[:-1], mode="sum", per_sample_weights=weights)


def _pre_grad(pairs: Pairs, g_out: Tensor, W_dec: Tensor) -> Tensor:
    """d loss / d pre at each pair: g_out[token] . W_dec[latent] where the ReLU passed, else 0."""
    dots = torch.ops.aten._embedding_bag_per_sample_weights_backward(
        g_out, W_dec, pairs.cols, pairs.crow[:-1], pairs.rows, SUM
    )
    return dots * (pairs.values > 0)


def _latent_major(cols: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """(order, crow): the stable permutation grouping pairs by latent, and each latent's start (F + 1)."""
    if cols.device.type == "cpu":  # single-threaded numpy, see `argsort_ints`
        c = cols.numpy()
        crow = np.zeros(width + 1, dtype=np.int64)
        np.cumsum(np.bincount(c, minlength=width), out=crow[1:])
        keys = c.astype(np.uint16) if width <= 1 << 16 else c  # numpy's stable sort is a radix sort on 16 bits (~20x)
        return torch.from_numpy(np.argsort(keys, kind="stable")), torch.from_numpy(crow)
    crow = torch.zeros(width + 1, dtype=torch.int64, device=cols.device)
    crow[1:] = torch.bincount(cols, minlength=width).cumsum(0)
    return cols.argsort(stable=True), crow


def _take(t: Tensor, order: Tensor) -> Tensor:
    """t[order]; numpy on the CPU for the same reason as `argsort_ints` (no bfloat16 in numpy)."""
    if t.device.type == "cpu" and t.dtype != torch.bfloat16:
        return torch.from_numpy(t.numpy()[order.numpy()])
    return t[order]


def _weight_grads(pairs: Pairs, d_pre: Tensor, x: Tensor, g_out: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """(dW_enc^T, dW_dec), each (F, d_in), as gather-sums over the pairs in latent-major order."""
    order, crow = _latent_major(pairs.cols, width)
    rows = _take(pairs.rows, order)
    values = _take(pairs.values.to(x.dtype), order)
    return _gather_sum(rows, crow, x, _take(d_pre, order)), _gather_sum(rows, crow, g_out, values)


def _aux_grads(aux: AuxBlock, g_aux: Tensor, x: Tensor, W_dec: Tensor, dW_enc_T, dW_dec, db_enc) -> Tensor:
    """Add AuxK's gradients (GEMMs over the dead columns) into the (F, ...) buffers; returns d pre_dead."""
    acts = aux.acts.to(x.dtype)
    d_acts = (g_aux @ W_dec.index_select(0, aux.dead_cols).t()) * (acts > 0)  # (N, n_dead)
    dW_dec.index_add_(0, aux.dead_cols, acts.t() @ g_aux)
    dW_enc_T.index_add_(0, aux.dead_cols, d_acts.t() @ x)
    db_enc.index_add_(0, aux.dead_cols, d_acts.sum(0))
    return d_acts


def auxk_from_decoded(residual: Tensor, aux_decoded: Tensor | None) -> Tensor:
    """AuxK (Gao et al. 2024, §A.2) from the dead latents' decoded sum; same value as `saes.sparse.auxk_loss`.

    ||e - e_hat||^2 summed over d_in, mean over tokens, with e the detached residual; 0 without dead latents.
    """
    if aux_decoded is None:
        return residual.new_zeros(())
    return (residual.detach() - aux_decoded).pow(2).sum(-1).mean()


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
