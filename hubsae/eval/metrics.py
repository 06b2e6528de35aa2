"""Reconstruction, sparsity and language-model metrics of an SAE, on tensors (definitions as in SAEBench, arXiv 2503.09532, and SAELens).

Everything here is pure: tensors in, numbers out. `ReconstructionMetrics` accumulates over
batches in float64, so a metric over many batches equals the metric over their concatenation
(except the per-token "legacy" variance, which by definition uses each batch's own mean).

Explained variance comes in three variants that differ by several points; all are reported:
- `fvu` / `explained_variance` (ours, primary, SAELens `explained_variance`, OpenAI's normalized
  MSE): pooled ratio of means, E‖x − x̂‖² / E‖x − E[x]‖², E[x] the mean over all tokens.
- `fvu_legacy` / `explained_variance_legacy` (SAELens `explained_variance_legacy`, what SAEBench's
  published tables and KronSAE's code use): mean over tokens of 1 − ‖x − x̂‖² / ‖x − mean_batch(x)‖².
- `fvu_dimvar` / `explained_variance_dimvar` (dictionary_learning `frac_variance_explained`):
  Σ_dim Var(x − x̂) / Σ_dim Var(x); blind to a constant reconstruction offset.
"""

import math

import torch
from torch import Tensor

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of tokens is "dense" (the usual cut, e.g. SAEBench)


class ReconstructionMetrics:
    """Streaming accumulator of reconstruction and sparsity statistics.

    Call `update(x, x_hat, features)` per batch (any leading shape, last dim d_in / d_sae), then
    `compute()`. Per-latent counts (`fire_count`, `act_sum`, `act_max`) stay available for the
    density histogram and the feature browser.
    """

    def __init__(self, d_in: int, d_sae: int, device: torch.device | str = "cpu"):
        f64 = dict(dtype=torch.float64, device=device)
        self.d_in, self.d_sae = d_in, d_sae
        self.n_tokens = 0
        self.sum_sq_err = torch.zeros((), **f64)  # Σ_tokens ‖x − x̂‖²
        self.sum_err = torch.zeros(d_in, **f64)  # Σ_tokens (x − x̂)
        self.sum_x = torch.zeros(d_in, **f64)
        self.sum_x_sq = torch.zeros((), **f64)  # Σ_tokens ‖x‖²
        self.sum_ev_legacy = torch.zeros((), **f64)
        self.sum_cos = torch.zeros((), **f64)
        self.sum_l2_ratio = torch.zeros((), **f64)
        self.sum_l0 = torch.zeros((), **f64)
        self.sum_l1 = torch.zeros((), **f64)
        self.fire_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.act_sum = torch.zeros(d_sae, **f64)
        self.act_max = torch.zeros(d_sae, **f64)

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, features: Tensor) -> None:
        """Add a batch of activations, reconstructions and features (tokens flattened over leading dims)."""
        if x.shape != x_hat.shape or x.shape[-1] != self.d_in:
            raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must match with last dim {self.d_in}")
        if features.shape[:-1] != x.shape[:-1] or features.shape[-1] != self.d_sae:
            raise ValueError(f"features {tuple(features.shape)} must be {tuple(x.shape[:-1])} + ({self.d_sae},)")
        dev = self.sum_x.device
        x_ND = x.reshape(-1, self.d_in).to(dev, torch.float64)
        x_hat_ND = x_hat.reshape(-1, self.d_in).to(dev, torch.float64)
        f_NF = features.reshape(-1, self.d_sae).to(dev)
        if x_ND.shape[0] == 0:
            return
        err_ND = x_ND - x_hat_ND
        sq_err_N = err_ND.pow(2).sum(-1)
        self.n_tokens += x_ND.shape[0]
        self.sum_sq_err += sq_err_N.sum()
        self.sum_err += err_ND.sum(0)
        self.sum_x += x_ND.sum(0)
        self.sum_x_sq += x_ND.pow(2).sum()
        centered_sq_N = (x_ND - x_ND.mean(0)).pow(2).sum(-1)
        self.sum_ev_legacy += (1 - sq_err_N / centered_sq_N).sum()
        x_norm_N, x_hat_norm_N = x_ND.norm(dim=-1), x_hat_ND.norm(dim=-1)
        eps = torch.finfo(torch.float64).tiny
        self.sum_cos += ((x_ND * x_hat_ND).sum(-1) / (x_norm_N * x_hat_norm_N).clamp_min(eps)).sum()
        self.sum_l2_ratio += (x_hat_norm_N / x_norm_N.clamp_min(eps)).sum()
        active_NF = f_NF != 0
        self.sum_l0 += active_NF.sum()
        self.sum_l1 += f_NF.double().abs().sum()
        self.fire_count += active_NF.sum(0)
        self.act_sum += f_NF.double().sum(0)
        self.act_max = torch.maximum(self.act_max, f_NF.double().max(0).values)

    def compute(self, dense_threshold: float = DENSE_THRESHOLD) -> dict[str, float]:
        """All scalar metrics; see the module docstring for the three variance variants."""
        n = self.n_tokens
        if n == 0:
            raise ValueError("no tokens were added to ReconstructionMetrics; nothing to compute")
        mse = float(self.sum_sq_err) / n
        total_var = float(self.sum_x_sq) / n - float((self.sum_x / n).pow(2).sum())  # E‖x − E[x]‖²
        err_var = mse - float((self.sum_err / n).pow(2).sum())  # Σ_dim Var(x − x̂)
        fvu = mse / total_var if total_var > 0 else math.nan
        fvu_dimvar = err_var / total_var if total_var > 0 else math.nan
        ev_legacy = float(self.sum_ev_legacy) / n
        density = self.fire_count.double() / n
        return {
            "n_tokens": n,
            "mse": mse,
            "mse_per_element": mse / self.d_in,
            "fvu": fvu,
            "explained_variance": 1 - fvu,
            "fvu_legacy": 1 - ev_legacy,
            "explained_variance_legacy": ev_legacy,
            "fvu_dimvar": fvu_dimvar,
            "explained_variance_dimvar": 1 - fvu_dimvar,
            "cosine_similarity": float(self.sum_cos) / n,
            "l2_ratio": float(self.sum_l2_ratio) / n,
            "l0": float(self.sum_l0) / n,
            "l1": float(self.sum_l1) / n,
            "dead_fraction": float((self.fire_count == 0).double().mean()),
            "dense_fraction": float((density > dense_threshold).double().mean()),
        }

    def density(self) -> Tensor:
        """Fraction of tokens on which each latent fired, (d_sae,)."""
        return self.fire_count.double() / max(self.n_tokens, 1)

    def mean_activation(self) -> Tensor:
        """Mean activation of each latent over the tokens where it fired (0 for dead latents), (d_sae,)."""
        return self.act_sum / self.fire_count.clamp_min(1).double()


def density_histogram(density: Tensor, bins: int = 50, low: float = -8.0) -> dict[str, list]:
    """Histogram of log10(feature density) over live latents, plus the number of dead ones.

    Bin edges run from `low` (clipped) to 0 (a latent that fires on every token).
    """
    density = density.double().cpu()
    alive = density[density > 0]
    logd = alive.log10().clamp_min(low)
    counts = torch.histc(logd, bins=bins, min=low, max=0.0) if alive.numel() else torch.zeros(bins)
    edges = torch.linspace(low, 0.0, bins + 1)
    return {
        "log10_density_edges": edges.tolist(),
        "counts": [int(c) for c in counts],
        "dead": int((density == 0).sum()),
    }


def decoder_max_cosine(W_dec: Tensor, chunk: int = 2048) -> Tensor:
    """For each decoder row, its largest cosine similarity to any *other* row, (d_sae,).

    The mean of this is OrtSAE's MeanCosSim (eq. 6).
    """
    return decoder_nearest_neighbours(W_dec, chunk)[0]


@torch.no_grad()
def decoder_nearest_neighbours(W_dec: Tensor, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """(cosine, index) of each decoder row's nearest other row, each (d_sae,).

    Computed in row chunks so memory stays at chunk × d_sae instead of d_sae².
    """
    unit_FD = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W_dec.dtype).tiny)
    n = unit_FD.shape[0]
    if n < 2:
        raise ValueError(f"decoder_max_cosine needs at least 2 decoder rows, got W_dec of shape {tuple(W_dec.shape)}")
    cos = torch.empty(n, dtype=unit_FD.dtype, device=unit_FD.device)
    idx = torch.empty(n, dtype=torch.int64, device=unit_FD.device)
    for start in range(0, n, chunk):
        cos_CF = unit_FD[start : start + chunk] @ unit_FD.T
        rows = torch.arange(cos_CF.shape[0], device=cos_CF.device)
        cos_CF[rows, rows + start] = -math.inf  # a row is not its own neighbour
        cos[start : start + chunk], idx[start : start + chunk] = cos_CF.max(-1)
    return cos, idx


def token_cross_entropy(logits: Tensor, input_ids: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy: (sum over predicted tokens, count). `mask` (B, T) marks real tokens.

    Position t predicts token t+1; a prediction counts when both positions are real tokens.
    """
    logp_BTV = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # float32: (B, T, vocab) is large
    target_BT = input_ids[:, 1:]
    nll_BT = -logp_BTV.gather(-1, target_BT.unsqueeze(-1)).squeeze(-1)
    keep_BT = torch.ones_like(nll_BT, dtype=torch.bool) if mask is None else (mask[:, :-1] & mask[:, 1:]).bool()
    return nll_BT[keep_BT].double().sum(), keep_BT.sum()


def token_kl(clean_logits: Tensor, new_logits: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """KL(P_clean ‖ P_new) per token, summed over (masked) tokens: (sum, count).

    The direction SAELens/SAEBench compute (sum of p_clean · (log p_clean − log p_new)).
    """
    if mask is not None:
        clean_logits, new_logits = clean_logits[mask.bool()], new_logits[mask.bool()]
    logp_clean = torch.log_softmax(clean_logits.float(), dim=-1)
    return kl_from_log_probs(logp_clean, new_logits), torch.tensor(logp_clean.shape[:-1].numel())


def kl_from_log_probs(logp_clean: Tensor, new_logits: Tensor) -> Tensor:
    """Σ over tokens of KL(P_clean ‖ P_new), P_clean given as log-probabilities (..., vocab), so one
    log-softmax of the clean logits serves several interventions."""
    logp_new = torch.log_softmax(new_logits.float(), dim=-1)
    return (logp_clean.exp() * (logp_clean - logp_new)).sum(-1).double().sum()


def fraction_recovered(clean: float, spliced: float, ablated: float) -> float:
    """(ablated − spliced) / (ablated − clean): 1 when splicing costs nothing, 0 when it is as bad as
    ablation. Used for CE loss recovered (SAEBench `ce_loss_score`)."""
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else math.nan


def kl_score(kl_spliced: float, kl_ablated: float) -> float:
    """(KL_ablated − KL_spliced) / KL_ablated (SAEBench `kl_div_score`)."""
    return (kl_ablated - kl_spliced) / kl_ablated if kl_ablated != 0 else math.nan
