"""KronSAE's sparse path: select the global top-k post-latents without scoring all F of them.

KronSAE (Kurochkin et al., arXiv 2505.22255 v3, §3, eqs. 3-4) composes head c's post-latent
(i, j) from two pre-latents, z = g(u_i, v_j), F = h*m*n. Its cost model (App. A.2, eq. 7) counts
only the encoder GEMM of width h*(m+n), m*n*h compositions and a k-sparse decoder. This module
reaches that cost per token without ever forming the (N, F) scores:

* Selection. Every g here is non-decreasing in the product u_i v_j (mAND = sqrt(ReLU(u)ReLU(v) +
  eps), ReLU(u)ReLU(v)) or is the product itself ("raw_prod"), so a head's largest post-latent is
  attained at the extremes of its factors: ReLU(max u) * ReLU(max v) for the ReLU kinds, and the
  largest of the four corner products {min u, max u} x {min v, max v} for u v (a bilinear function
  on a box peaks at a corner). Rounded multiplication is monotone in each factor, so these head
  maxima equal the float maxima of the per-pair scores exactly. The k winners lie inside the k
  heads with the largest maxima (k such heads already hold k values >= any value outside them),
  so only those k*m*n pairs are scored: O(h + k*m*n) per token instead of O(F).
* Ties are broken towards the lower post-latent index at both stages (one int64 key per value:
  the value's order-preserving bits, then the complemented index), which makes the selection
  exactly TopK over all F post-latents with that rule, ties and zero-valued winners included.
* Backward. The winners' values depend on at most 2k of the h*(m+n) pre-latents per token, so
  d W_enc and d b_enc are gather-sums over (token, pre-latent, gradient) triples, sorted by
  pre-latent (the same kernels as `sparse_coding`): O(N k d_in), no (N, F) or dense
  (N, h*(m+n)) gradient.

AuxK (Gao et al. 2024, §A.2) selects among the dead post-latents only: a dense block of width
n_dead, composed from the same pre-latents, whose backward scatters into the same triples.
"""

import functools
import logging

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .select import BLOCK, topk_rows
from .sparse_coding import _acc, _gather_sum, _latent_major, _take, argsort_ints

logger = logging.getLogger(__name__)
COMPOSITIONS = ("mand", "relu_prod", "raw_prod")
_LOW = (1 << 32) - 1  # the index half of a key


def pair_scores(u: Tensor, v: Tensor, kind: str) -> Tensor:
    """A score whose order is the post-latents' order: ReLU(u)ReLU(v) for mAND and relu_prod, u v for raw_prod."""
    return u * v if kind == "raw_prod" else torch.relu(u) * torch.relu(v)


def finalize(scores: Tensor, kind: str, eps: float) -> Tensor:
    """Post-latent values from `pair_scores` (monotone, so it commutes with TopK).

    mAND: sqrt(s + eps) where s = ReLU(u)ReLU(v) > 0, else exactly 0. The dead branch's sqrt
    argument is replaced by 1 so that its (discarded) gradient stays finite even at eps = 0:
    torch.where's backward would otherwise multiply an inf by 0.
    """
    if kind != "mand":
        return scores
    active = scores > 0
    return torch.where(active, torch.sqrt(torch.where(active, scores, 1.0) + eps), 0.0)


def pair_values(u: Tensor, v: Tensor, kind: str, eps: float) -> Tensor:
    """The features TopK keeps: ReLU(finalize(pair_scores)), so raw_prod's negative products are 0."""
    return torch.relu(finalize(pair_scores(u, v, kind), kind, eps))


def pair_grads(u: Tensor, v: Tensor, values: Tensor, d_values: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """(d u, d v) of `pair_values` at pairs with value > 0 (elsewhere every branch has zero slope).

    A positive value means u v > 0 (and u, v > 0 for the ReLU kinds), so d(uv)/du = v; mAND adds
    d sqrt(s + eps)/ds = 1 / (2 sqrt(s + eps)) = 1 / (2 value).
    """
    scale = torch.where(values > 0, d_values, 0.0)
    if kind == "mand":
        scale = scale / torch.where(values > 0, 2 * values, 1.0)
    return scale * v, scale * u


# ---- exact top-k with the lower index winning ties ---------------------------------------------


def order_keys(values: Tensor, index: Tensor, signed: bool = True) -> Tensor:
    """int64 keys ordered like (value, -index): distinct, so any top-k over them is exact.
    `signed=False` promises values >= 0 (ReLU'd scores) and skips the sign handling.

    The float32 bits of a value, flipped below zero, are an int32 in the value's order (+0.0 added
    first so that -0.0 ties with 0.0, as in a float comparison); the low 32 bits hold ~index.
    """
    bits = (values.float() + 0.0).view(torch.int32)
    if signed:  # negative floats order backwards as ints: flip their magnitude bits
        bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return torch.add(_LOW - index, bits, alpha=1 << 32)  # bits * 2^32 + ~index, one int64 pass


def keyed_topk(values: Tensor, index: Tensor, k: int, signed: bool = True) -> Tensor:
    """Positions (R, k) of the k largest values of each row of `values` (R, n), lower `index` first on ties."""
    _, positions = topk_rows(order_keys(values, index, signed), k)
    return positions


def first_topk(values: Tensor, k: int, signed: bool = True) -> Tensor:
    """`keyed_topk` by position (the lower column first on ties), comparing the floats themselves.

    The int64 keys cost three passes over the row and a top-k over twice the bytes; they are built
    only for the rows where a tie straddles the k-th value (zero-valued winners when fewer than k
    are positive, duplicated scores), elsewhere the k largest are one set and any top-k finds it.
    On the CPU the candidates are the k blocks with the largest maxima, as in `select.topk_rows`:
    a value equal to the k-th one can then hide only in an unchosen block whose maximum reaches it.
    `values` may be a transposed view (the head maxima are (h, N) in memory). On CUDA: `keyed_topk`
    (no data-dependent branch, so no device sync).
    """
    n_rows, n = values.shape
    positions = torch.arange(n, device=values.device)
    if values.device.type != "cpu":
        return keyed_topk(values, positions, k, signed)
    cols, chosen, block_max = _block_candidates(values, k)
    cand = values if cols is None else values.gather(1, cols)
    top, pick = cand.topk(k, dim=1, sorted=False)
    kth = top.amin(1, keepdim=True)
    tied = (cand >= kth).sum(1) > k
    if cols is not None:
        tied |= (block_max >= kth).sum(1) > (chosen >= kth).sum(1)
        pick = cols.gather(1, pick)
    rows = tied.nonzero().squeeze(1)
    if rows.numel():
        pick[rows] = keyed_topk(values[rows], positions, k, signed)
    return pick


def _block_candidates(values: Tensor, k: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(candidate columns (R, k*BLOCK + tail), the chosen blocks' maxima (R, k), all block maxima)
    for `first_topk`; (None, None, None) when a row is too short for blocks to pay off."""
    n = values.shape[1]
    if n < 2 * BLOCK * k:
        return None, None, None
    n_blocks = n // BLOCK
    body = n_blocks * BLOCK
    # block j holds columns j, j + n_blocks, ...: its maximum is an elementwise max of BLOCK slabs, taken
    # in the storage's own order (a strided reduction over a transposed view costs ~10x)
    if values.stride(0) == 1 and values.shape[0] > 1:  # a transposed view, as the head maxima are
        block_max = values.t()[:body].unflatten(0, (BLOCK, n_blocks)).amax(0).t()
    else:
        block_max = values[:, :body].unflatten(1, (BLOCK, n_blocks)).amax(1)
    chosen, blocks = topk_rows(block_max, k)
    cols = (blocks.unsqueeze(-1) + n_blocks * torch.arange(BLOCK, device=values.device)).flatten(1)
    if body < n:  # the n % BLOCK tail columns belong to no block: always candidates
        cols = torch.cat([cols, torch.arange(body, n, device=values.device).expand(values.shape[0], -1)], 1)
    return cols, chosen, block_max


# ---- selection --------------------------------------------------------------------------------


def head_maxima(u: Tensor, v: Tensor, kind: str, dim: int = -1, out: Tensor | None = None) -> Tensor:
    """The largest pair score of each head, exactly, from u (.., m, ..) and v (.., n, ..) reduced over `dim`.

    `out`: an optional (2, *shape) buffer for the ReLU kinds' factor maxima (the result is out[0]).
    """
    if kind != "raw_prod":
        u_max, v_max = (None, None) if out is None else out
        u_max = torch.amax(u, dim, out=u_max) if u_max is not None else u.amax(dim)
        v_max = torch.amax(v, dim, out=v_max) if v_max is not None else v.amax(dim)
        return u_max.clamp_min_(0).mul_(v_max.clamp_min_(0))
    u_lo, u_hi = u.aminmax(dim=dim)
    v_lo, v_hi = v.aminmax(dim=dim)
    return torch.maximum(torch.maximum(u_hi * v_hi, u_lo * v_lo), torch.maximum(u_hi * v_lo, u_lo * v_hi))


def workspace_rows(num_heads: int, m: int, n: int) -> int:
    """Rows of a (rows, N) `KronCode` workspace: the encoder output's h*(m+n), then 2h for the head maxima."""
    return num_heads * (m + n + 2)


@torch.no_grad()
def select_pairs(
    uv: Tensor, num_heads: int, m: int, n: int, k: int, kind: str, scratch: Tensor | None = None
) -> Tensor:
    """Global TopK post-latent indices (N, k) (order k*m*n + i*n + j) from the encoder output uv (N, h*(m+n)).

    Any memory layout works; the column-major one of `factor_preacts` is the fast one: there each
    pre-latent is a contiguous row over the tokens, so a head's maximum is an elementwise maximum
    of m (or n) rows instead of a short strided reduction per token. `scratch`: see `head_maxima`.
    """
    n_tok, mn = uv.shape[0], m * n
    uv_HWN = uv.t().unflatten(0, (num_heads, m + n))  # (h, m+n, N), a view
    signed = kind == "raw_prod"  # the ReLU kinds' scores are >= 0
    maxima_HN = head_maxima(uv_HWN[:, :m], uv_HWN[:, m:], kind, dim=1, out=scratch)
    heads_NK = first_topk(maxima_HN.t(), min(k, num_heads), signed)
    heads_NK = heads_NK.sort(-1).values  # candidates in post-latent order: a tie goes to the lower position
    kh = heads_NK.shape[1]
    cols = (heads_NK.unsqueeze(-1) * (m + n) + torch.arange(m + n, device=uv.device)).flatten(1)
    sel_NKW = uv.gather(1, cols).view(n_tok, kh, m + n)  # the candidate heads' factors
    u_NKM, v_NKN = sel_NKW[..., :m], sel_NKW[..., m:]
    scores = pair_scores(u_NKM[..., :, None], v_NKN[..., None, :], kind).reshape(n_tok, kh * mn)
    pos = first_topk(scores, k, signed)  # (N, k) among the candidates
    return heads_NK.gather(1, pos // mn) * mn + pos % mn


def factor_columns(indices: Tensor, m: int, n: int) -> tuple[Tensor, Tensor]:
    """Columns of u_i and v_j in the fused encoder output for post-latents c*m*n + i*n + j."""
    head, within = indices // (m * n), indices % (m * n)
    base = head * (m + n)
    return base + within // n, base + m + within % n


@torch.no_grad()
def select_dead(uv: Tensor, dead: Tensor, m: int, n: int, k_aux: int, kind: str, eps: float) -> Tensor:
    """AuxK's selection: the top-k_aux (N, k') of the dead post-latents `dead` (n_dead,), k' = min(k_aux, n_dead)."""
    cu, cv = factor_columns(dead, m, n)
    uv_WN = uv.t()  # rows of the column-major encoder output
    acts = pair_values(uv_WN.index_select(0, cu), uv_WN.index_select(0, cv), kind, eps).t()  # (N, n_dead)
    return dead[first_topk(acts, min(k_aux, dead.numel()), signed=False)]  # dead is sorted: same ties


# ---- autograd ---------------------------------------------------------------------------------


class Winners:
    """The selected pairs of one selection: post-latent indices and their factors' columns and values."""

    def __init__(self, uv: Tensor, indices: Tensor, m: int, n: int, kind: str, eps: float):
        self.indices = indices
        self.cu, self.cv = factor_columns(indices, m, n)
        self.u, self.v = uv.gather(1, self.cu), uv.gather(1, self.cv)
        self.values = pair_values(self.u, self.v, kind, eps)

    def triples(self, d_values: Tensor, kind: str) -> tuple[Tensor, Tensor]:
        """(columns (N, 2k), gradients (N, 2k)) of d loss / d uv at the winners' factors."""
        du, dv = pair_grads(_acc(self.u), _acc(self.v), _acc(self.values), _acc(d_values), kind)
        return torch.cat([self.cu, self.cv], 1), torch.cat([du, dv], 1)


def factor_preacts(x: Tensor, W_enc: Tensor, b_enc: Tensor, out: Tensor | None = None) -> Tensor:
    """The fused encoder output uv = x W_enc + b_enc (N, h*(m+n)), the only dense GEMM, column-major.

    It is computed as uv^T = W_enc^T x^T into a (h*(m+n), N) buffer (`out`, reused across steps by
    the caller, or a new one) and returned as its transposed view: the selection then reads whole
    rows (`select_pairs`). The GEMM reads both operands in place, transposed or not.
    """
    return torch.addmm(b_enc.unsqueeze(1), W_enc.t(), x.t(), out=out).t()


class KronCode(torch.autograd.Function):
    """(x, W_enc, b_enc) -> (values, indices, aux values | None, aux indices | None).

    values (N, k) are the TopK post-latents at `indices` (global post-latent ids), differentiable
    in x, W_enc and b_enc; aux_* are AuxK's top-k_aux among the `dead` post-latents (None when
    there are none). Decode them with any gather-sum (`embedding_bag`). `workspace` is an optional
    (`workspace_rows`, N) buffer for the encoder output and the head maxima, used within the forward only.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, shape: tuple[int, int, int, int], kind: str, eps: float, dead, k_aux, workspace):
        num_heads, m, n, k = shape
        out = scratch = None
        if workspace is not None:
            out, scratch = workspace.split([W_enc.shape[1], 2 * num_heads])
            scratch = scratch.unflatten(0, (2, num_heads))
        uv = factor_preacts(x, W_enc, b_enc, out)  # (N, h*(m+n)), column-major
        main = Winners(uv, select_pairs(uv, num_heads, m, n, k, kind, scratch), m, n, kind, eps)
        aux = None
        if dead is not None and dead.numel() > 0:
            aux = Winners(uv, select_dead(uv, dead, m, n, k_aux, kind, eps), m, n, kind, eps)
        ctx.save_for_backward(x, W_enc)
        ctx.winners, ctx.kind = (main, aux), kind
        outputs = (main.values.clone(), main.indices)
        outputs += (aux.values.clone(), aux.indices) if aux is not None else (None, None)
        ctx.mark_non_differentiable(*(t for t in outputs[1::2] if t is not None))
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_values, _d_indices, d_aux, _d_aux_indices):
        x, W_enc = ctx.saved_tensors
        cols, grads = [], []
        for winners, d in zip(ctx.winners, (d_values, d_aux), strict=True):
            if winners is not None and d is not None:
                c, g = winners.triples(d, ctx.kind)
                cols.append(c)
                grads.append(g)
        if not cols:  # neither output reached the loss
            return (None,) * 9
        cols_NP, grads_NP = torch.cat(cols, 1), torch.cat(grads, 1)  # (N, pairs per token)
        dx, dW_enc, db_enc = factor_backward(cols_NP, grads_NP, x, W_enc, ctx.needs_input_grad[0])
        return dx, dW_enc, db_enc, None, None, None, None, None, None


def factor_backward(cols: Tensor, grads: Tensor, x: Tensor, W_enc: Tensor, want_dx: bool):
    """(d x | None, d W_enc, d b_enc) from d uv given as (N, P) columns and gradients (duplicates add up).

    dW_enc[:, c] = sum over triples (t, c, g) of g x[t], a gather-sum over the triples sorted by c.
    It fills dW_enc^T row by row, so d W_enc comes back column-major: autograd keeps it as it is
    for a column-major W_enc and copies it into W_enc's layout otherwise.
    """
    n_tok, per = cols.shape
    width = W_enc.shape[1]
    flat_cols, flat_grads = cols.reshape(-1), grads.reshape(-1)
    rows = torch.arange(n_tok, device=x.device).repeat_interleave(per)
    order, crow = _latent_major(flat_cols, width)
    x_acc = _acc(x)
    dW_enc_T = _gather_sum(_take(rows, order), crow, x_acc, _take(flat_grads, order))  # (h*(m+n), d_in)
    db_enc = flat_grads.new_zeros(width).index_add_(0, flat_cols, flat_grads)
    dx = None
    if want_dx:  # only when the input itself is trained through (e.g. b_dec subtracted first)
        token_crow = torch.arange(0, n_tok * per + 1, per, device=x.device)
        dx = _gather_sum(flat_cols, token_crow, _acc(W_enc).t().contiguous(), flat_grads).to(x.dtype)
    return dx, dW_enc_T.t().to(W_enc.dtype), db_enc.to(W_enc.dtype)


def kron_code(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    shape: tuple[int, int, int, int],
    kind: str,
    eps: float,
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
    workspace: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Functional entry point of `KronCode` on flattened x (N, d_in); shape = (num_heads, m, n, k);
    `workspace`: see `KronCode`."""
    dead = None
    if dead_mask is not None and k_aux > 0:
        dead = dead_mask.nonzero().squeeze(1)
    return KronCode.apply(x, W_enc, b_enc, shape, kind, eps, dead, k_aux, workspace)


class GroupedDecode(torch.autograd.Function):
    """(indices (N, k), values (N, k), W_dec (F, d), groups (N, k) | None, G) -> (G, N, d).

    out[g, t] = sum of values[t, r] W_dec[indices[t, r]] over the r whose group is g (all r when
    groups is None, G = 1): each Matryoshka group's own decode, so that prefix sums give every
    prefix's reconstruction (arXiv 2505.22255 eq. 6) from one pass over the k winners. The backward
    is two gather-sums (as in `sparse_coding`): d values = g_out . W_dec[index] per pair, and
    d W_dec over the pairs sorted by latent; nothing (N, F)-sized.
    """

    @staticmethod
    def forward(ctx, indices, values, W_dec, groups, num_groups: int):
        n_tok, k = indices.shape
        bags = torch.arange(n_tok, device=indices.device).repeat_interleave(k)  # output row of each pair
        if groups is not None:
            bags = groups.reshape(-1) * n_tok + bags
        order = argsort_ints(bags) if groups is not None else None
        cols, weights = indices.reshape(-1), values.reshape(-1).to(W_dec.dtype)
        if order is not None:
            cols, weights, bags = _take(cols, order), _take(weights, order), _take(bags, order)
        crow = torch.zeros(num_groups * n_tok + 1, dtype=torch.int64, device=indices.device)
        crow[1:] = torch.bincount(bags, minlength=num_groups * n_tok).cumsum(0)
        out = _gather_sum(cols, crow, W_dec, weights).view(num_groups, n_tok, -1)
        ctx.save_for_backward(W_dec)
        ctx.pairs = (cols, weights, bags, crow, order)
        ctx.value_meta = (values.shape, values.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        (W_dec,) = ctx.saved_tensors
        cols, weights, bags, crow, order = ctx.pairs
        g_rows, W_acc = _acc(g_out).reshape(-1, g_out.shape[-1]), _acc(W_dec)
        d_weights = torch.ops.aten._embedding_bag_per_sample_weights_backward(g_rows, W_acc, cols, crow[:-1], bags, 0)
        d_values = torch.empty_like(d_weights)
        if order is not None:  # back to the token-major order of `values`
            d_values[order] = d_weights
        else:
            d_values = d_weights
        latent_order, latent_crow = _latent_major(cols, W_dec.shape[0])
        dW_dec = _gather_sum(_take(bags, latent_order), latent_crow, g_rows, _take(_acc(weights), latent_order))
        shape, dtype = ctx.value_meta
        return None, d_values.view(shape).to(dtype), dW_dec.to(W_dec.dtype), None, None


def grouped_decode(indices: Tensor, values: Tensor, W_dec: Tensor, bounds: list[int] | None = None) -> Tensor:
    """`GroupedDecode` with groups [0, b_1), [b_1, b_2), ... for the inner bounds b_i (None: one group), (G, N, d)."""
    if not bounds:
        return GroupedDecode.apply(indices, values, W_dec, None, 1)
    groups = torch.bucketize(indices, torch.tensor(bounds, device=indices.device), right=True)
    return GroupedDecode.apply(indices, values, W_dec, groups, len(bounds) + 1)


@functools.cache
def announce_kron_path(owner: str, path: str) -> None:
    """Log once per process and path ("sparse" or "dense: <why>") which path a KronSAE trains through."""
    if path == "sparse":
        logger.info("%s trains through the sparse Kron path (hubsae.ops.kron): no (N, F) scores", owner)
    else:
        logger.info("%s trains through the %s", owner, path.replace("dense:", "dense path:", 1))


__all__ = [
    "COMPOSITIONS",
    "announce_kron_path",
    "KronCode",
    "GroupedDecode",
    "factor_columns",
    "factor_preacts",
    "first_topk",
    "grouped_decode",
    "finalize",
    "head_maxima",
    "keyed_topk",
    "kron_code",
    "order_keys",
    "pair_grads",
    "pair_scores",
    "pair_values",
    "select_dead",
    "select_pairs",
    "workspace_rows",
]
