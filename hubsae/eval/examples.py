"""One streaming pass over feature activations: top-k contexts and activation histograms per latent.

Memory is bounded by the number of latents, never by the number of tokens seen:
`TopActivations` keeps d_sae × k windows of 2·radius + 1 tokens; `ActivationHistogram` keeps
d_sae × bins counts.
"""

import torch
from torch import Tensor

PAD_TOKEN = -1  # token id of window positions that fall outside the sequence


class TopActivations:
    """The k sequences on which each latent fires hardest, with the window around its peak.

    Each sequence contributes at most one example per latent (its maximum), as in SAEDashboard.
    After the pass: `values (F, k)` peak activations in descending order (-inf where fewer than k
    sequences fired), `seq (F, k)` global sequence indices, `pos (F, k)` peak positions,
    `tokens (F, k, W)` token ids of the window (PAD_TOKEN outside the sequence) and
    `acts (F, k, W)` the latent's activation on each of them.

    With `sample=True` the k sequences are instead a uniform random sample of those on which the
    latent fired (each gets a random priority; the k highest priorities are kept, which is reservoir
    sampling without replacement), showing typical rather than extreme activations.
    """

    def __init__(
        self,
        d_sae: int,
        k: int = 20,
        radius: int = 5,
        device: torch.device | str = "cpu",
        sample: bool = False,
        seed: int = 0,
    ):
        if k <= 0 or radius < 0:
            raise ValueError(f"TopActivations needs k > 0 and radius >= 0, got k={k}, radius={radius}")
        self.d_sae, self.k, self.radius = d_sae, k, radius
        width = 2 * radius + 1
        self.generator = torch.Generator(device=device).manual_seed(seed) if sample else None
        self.rank = torch.full((d_sae, k), -torch.inf, device=device)  # the peak, or the random priority
        self.values = torch.full((d_sae, k), -torch.inf, device=device)
        self.seq = torch.full((d_sae, k), -1, dtype=torch.int64, device=device)
        self.pos = torch.full((d_sae, k), -1, dtype=torch.int64, device=device)
        self.tokens = torch.full((d_sae, k, width), PAD_TOKEN, dtype=torch.int64, device=device)
        self.acts = torch.zeros((d_sae, k, width), device=device)
        self.n_sequences = 0

    @torch.no_grad()
    def update(self, features: Tensor, input_ids: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: features (B, T, F), input_ids (B, T), mask (B, T) of real tokens (optional)."""
        B, T, F = features.shape
        if F != self.d_sae or input_ids.shape != (B, T):
            raise ValueError(
                f"features {tuple(features.shape)} must be (B, T, {self.d_sae}) and input_ids "
                f"{tuple(input_ids.shape)} must be (B, T)"
            )
        feats_BTF = features.float().to(self.values.device)
        if mask is not None:
            feats_BTF = feats_BTF.masked_fill(~mask.bool().to(feats_BTF.device).unsqueeze(-1), 0.0)
        peak_BF, pos_BF = feats_BTF.max(dim=1)
        peak_BF = peak_BF.masked_fill(peak_BF <= 0, -torch.inf)  # a latent that never fired has no example
        tokens_BFW, acts_BFW = self._windows(feats_BTF, input_ids.to(self.values.device), pos_BF)
        seq_B = torch.arange(self.n_sequences, self.n_sequences + B, device=self.values.device)
        self.n_sequences += B
        rank_BF = peak_BF
        if self.generator is not None:
            prio = torch.rand(peak_BF.shape, generator=self.generator, device=peak_BF.device)
            rank_BF = prio.masked_fill(~torch.isfinite(peak_BF), -torch.inf)
        all_rank = torch.cat([self.rank, rank_BF.T], dim=1)  # (F, k + B)
        self.rank, top_idx = all_rank.topk(self.k, dim=1)  # sorted, descending
        self.values = _pick(self.values, peak_BF.T, top_idx)
        self.seq = _pick(self.seq, seq_B.expand(F, B), top_idx)
        self.pos = _pick(self.pos, pos_BF.T, top_idx)
        self.tokens = _pick(self.tokens, tokens_BFW.transpose(0, 1), top_idx)
        self.acts = _pick(self.acts, acts_BFW.transpose(0, 1), top_idx)

    def _windows(self, feats_BTF: Tensor, ids_BT: Tensor, pos_BF: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids and activations in the window [pos - radius, pos + radius] of each (sequence, latent)."""
        r = self.radius
        B, T, F = feats_BTF.shape
        ids_pad = torch.nn.functional.pad(ids_BT.long(), (r, r), value=PAD_TOKEN)  # (B, T + 2r)
        feats_pad = torch.nn.functional.pad(feats_BTF.transpose(1, 2), (r, r))  # (B, F, T + 2r)
        idx_BFW = pos_BF.unsqueeze(-1) + torch.arange(2 * r + 1, device=pos_BF.device)
        tokens = ids_pad.unsqueeze(1).expand(B, F, T + 2 * r).gather(2, idx_BFW)
        return tokens, feats_pad.gather(2, idx_BFW)

    def examples(self, feature: int) -> list[dict]:
        """The examples of one latent, highest peak first: {seq, pos, value, tokens, acts}, padding cut."""
        out = []
        for j in self.values[feature].argsort(descending=True, stable=True).tolist():
            if not torch.isfinite(self.values[feature, j]):
                break
            toks, acts = self.tokens[feature, j], self.acts[feature, j]
            keep = toks != PAD_TOKEN
            out.append(
                {
                    "seq": int(self.seq[feature, j]),
                    "pos": int(self.pos[feature, j]),
                    "value": float(self.values[feature, j]),
                    "tokens": toks[keep].tolist(),
                    "acts": acts[keep].tolist(),
                }
            )
        return out


def _pick(old: Tensor, new: Tensor, idx: Tensor) -> Tensor:
    """Rows of cat([old, new], dim=1) chosen by idx (F, k), trailing dims carried along."""
    both = torch.cat([old, new.to(old.dtype)], dim=1)
    idx = idx.view(*idx.shape, *([1] * (both.dim() - 2))).expand(*idx.shape, *both.shape[2:])
    return both.gather(1, idx)


class ActivationHistogram:
    """Per-latent histogram of positive activations with `bins` equal bins on [0, bins · width).

    The width of a latent is set on its first activation and doubles (adjacent bins merge) whenever
    a larger value arrives, so counts stay exact without knowing the maximum in advance: a value v
    lands in bin floor(v / width) for the final width.
    """

    def __init__(self, d_sae: int, bins: int = 50, device: torch.device | str = "cpu"):
        if bins < 2 or bins % 2:
            raise ValueError(f"ActivationHistogram needs an even number of bins >= 2, got {bins}")
        self.d_sae, self.bins = d_sae, bins
        self.counts = torch.zeros((d_sae, bins), dtype=torch.int64, device=device)
        self.width = torch.zeros(d_sae, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, features: Tensor) -> None:
        """Add activations of shape (..., d_sae); only positive values are counted."""
        f_NF = features.reshape(-1, self.d_sae).double().to(self.counts.device)
        vmax_F = f_NF.max(0).values.clamp_min(0)
        new = (self.width == 0) & (vmax_F > 0)
        self.width[new] = vmax_F[new] / (self.bins - 1)  # the first maximum lands in the last bin
        while True:
            grow = (self.width > 0) & (torch.floor(vmax_F / self.width.clamp_min(1e-300)) >= self.bins)
            if not grow.any():
                break
            merged = self.counts[grow].view(-1, self.bins // 2, 2).sum(-1)
            self.counts[grow] = torch.cat([merged, torch.zeros_like(merged)], dim=1)
            self.width[grow] *= 2
        n_idx, f_idx = (f_NF > 0).nonzero(as_tuple=True)
        bin_idx = torch.floor(f_NF[n_idx, f_idx] / self.width[f_idx]).long().clamp_max(self.bins - 1)
        self.counts.view(-1).index_add_(0, f_idx * self.bins + bin_idx, torch.ones_like(bin_idx))

    def edges(self, feature: int) -> list[float]:
        """Bin edges of one latent (bins + 1 values; all zero for a latent that never fired)."""
        return (torch.arange(self.bins + 1, dtype=torch.float64) * float(self.width[feature])).tolist()
