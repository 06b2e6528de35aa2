"""PAM-SGD (SplInterp, arXiv 2505.11836; official code github.com/splInterp2025/splInterp): proximal alternating training.

The encoder (every parameter except W_dec and b_dec) takes SGD/Adam steps on the SAE loss plus
proximal "stay-close" terms mu_enc ||W - W_t||^2 + nu_enc ||b - b_t||^2 around anchors W_t, b_t.
The decoder (W_dec, b_dec) is not trained by gradient: each minibatch it is set to the exact
minimizer of the (N/|B|)-rescaled proximal ridge least-squares problem

    min_{W,b} (N/|B|) sum_{r in B} ||x_r - z_r W - b||^2 + alpha ||W||^2 + beta ||b||^2
              + mu ||W - W_t||^2 + nu ||b - b_t||^2,

with z_r the codes of the current encoder (row convention: W is (d_sae, d_in), x_hat = z W + b).
Zeroing the gradients (the authors' minibatch closed form, in hubsae's row convention) gives, with n = N (the dataset size) and
c = n / (n + beta + nu), batch means z_bar, x_bar and sums over the batch scaled by n/|B|:

    b* = (nu b_t + n (x_bar - z_bar W)) / (n + beta + nu)
    A W = C,  A = S_zz - c n z_bar z_bar^T + (alpha + mu + tol) I,
              C = S_zx - c z_bar (nu b_t + n x_bar)^T + mu W_t

A is symmetric positive (semi)definite: it is solved by Cholesky (torch.linalg.cholesky_ex), with
torch.linalg.solve as the fallback when A is singular; no explicit inverse. Accumulation and the
solve run in float64 since S_zz is ill-conditioned for sparse codes. A is d_sae x d_sae, so this
is for dictionaries up to ~32k latents.

Function API (what the trainer calls):
    decoder_closed_form(z_BF, x_BD, W_prev, b_prev, n_total=None, alpha=0, beta=0, mu=0, nu=0, tol=1e-8)
        -> (W_dec (F, D), b_dec (D,))                   # pure function of tensors
    PAMSGD(sae, n_total, mu_enc=1e-3, nu_enc=1e-3, mu_dec=0, nu_dec=0, alpha=0, beta=0, tol=1e-8)
        .encoder_parameters() -> list[Parameter]      # give these (only) to the optimizer
        .decoder_step(x) -> None                       # closed-form W_dec, b_dec for this batch
        .decoder_step_from(batches) -> None            # the same over many batches (e.g. an epoch)
    DecoderStatistics(d_sae, d_in).update(z, x) ... .solve(W_prev, b_prev, n_total, **coefs)
        .proximal_loss() -> scalar Tensor              # add to the SAE loss before backward
        .snapshot() -> None                            # move the anchors to the current values
    DecoderWindow(pam, batches=16, validation_every=4, ridge_grid=..., prox=1e-3)   # the Trainer's
        .observe(x) -> None   # accumulate one batch; solve (ridge chosen on held-out batches) when full
        .solve() -> None      # solve from what was accumulated; moves the encoder anchors
A step: decoder_step(x); loss = sae(x).loss + proximal_loss(); backward; optimizer.step();
snapshot() per epoch, as the official script does (per step, the proximal term has no gradient). Train with
`normalize_decoder=False`: renormalizing the decoder rows would undo the exact solve.
A solve from one minibatch overfits it unless the batch is much larger than d_sae or mu_dec /
alpha hold the decoder back: on SmolLM2 (F = 1024) a 4096-vector solve gave test MSE 299 where
the whole-set solve gave 213 for the same encoder (docs/reproductions.md). Prefer
`decoder_step_from` over an epoch of batches.
"""

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["PAMSGD", "DecoderStatistics", "DecoderWindow", "decoder_closed_form", "DECODER_PARAMETERS"]

logger = logging.getLogger(__name__)

DECODER_PARAMETERS = ("W_dec", "b_dec")


class DecoderStatistics:
    """Running float64 sums over batches: S_zz = sum z z^T (F, F), S_zx = sum z x^T (F, D), sum z,
    sum x, count. Lets the decoder be solved over a whole data set (the official script's per-epoch
    solve) in F^2 + F D memory, one batch of codes at a time.
    """

    def __init__(self, d_sae: int, d_in: int, device: torch.device | str | None = None):
        f64 = dict(dtype=torch.float64, device=device)
        self.S_zz, self.S_zx = torch.zeros(d_sae, d_sae, **f64), torch.zeros(d_sae, d_in, **f64)
        self.sum_z, self.sum_x = torch.zeros(d_sae, **f64), torch.zeros(d_in, **f64)
        self.sum_xx = torch.zeros((), **f64)  # sum ||x||^2: with the rest, the squared error of any (W, b)
        self.count = 0

    @torch.no_grad()
    def update(self, z_BF: Tensor, x_BD: Tensor) -> None:
        if z_BF.ndim != 2 or x_BD.ndim != 2 or z_BF.shape[0] != x_BD.shape[0]:
            raise ValueError(
                f"codes and inputs must be (B, F) and (B, D), got {tuple(z_BF.shape)} and {tuple(x_BD.shape)}"
            )
        if (z_BF.shape[1], x_BD.shape[1]) != tuple(self.S_zx.shape):
            raise ValueError(f"codes/inputs widths {z_BF.shape[1]}, {x_BD.shape[1]} != {tuple(self.S_zx.shape)}")
        z, x = z_BF.to(self.S_zz), x_BD.to(self.S_zz)
        self.S_zz += z.T @ z
        self.S_zx += z.T @ x
        self.sum_z += z.sum(0)
        self.sum_x += x.sum(0)
        self.sum_xx += x.pow(2).sum()
        self.count += z.shape[0]

    TENSORS = ("S_zz", "S_zx", "sum_z", "sum_x", "sum_xx")

    def state_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in self.TENSORS}, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        for name in self.TENSORS:
            getattr(self, name).copy_(state[name])
        self.count = int(state["count"])

    def merged(self, other: "DecoderStatistics") -> "DecoderStatistics":
        """The statistics of both sets of batches together."""
        both = DecoderStatistics(*self.S_zx.shape, self.S_zz.device)
        for name in self.TENSORS:
            getattr(both, name).copy_(getattr(self, name) + getattr(other, name))
        both.count = self.count + other.count
        return both

    @torch.no_grad()
    def squared_error(self, W: Tensor, b: Tensor) -> float:
        """sum_r ||x_r - z_r W - b||^2 over the accumulated batches, from the sums alone."""
        W, b = W.to(self.S_zz), b.to(self.S_zz)
        total = (
            self.sum_xx
            - 2 * (W * self.S_zx).sum()
            - 2 * b @ self.sum_x
            + (W * (self.S_zz @ W)).sum()
            + 2 * b @ (W.T @ self.sum_z)
            + self.count * b @ b
        )
        return float(total)

    @torch.no_grad()
    def solve(
        self, W_prev: Tensor, b_prev: Tensor, n_total: int | None = None, **coefs: float
    ) -> tuple[Tensor, Tensor]:
        """Exact minimizer (W_dec, b_dec); coefs: alpha, beta, mu, nu, tol (see `decoder_closed_form`)."""
        if self.count == 0:
            raise ValueError("no batches were accumulated")
        if W_prev.shape != self.S_zx.shape or b_prev.shape != self.sum_x.shape:
            raise ValueError(f"decoder shapes {tuple(W_prev.shape)}, {tuple(b_prev.shape)} do not match codes/inputs")
        alpha, beta, mu, nu, tol = (coefs.get(k, 0.0) for k in ("alpha", "beta", "mu", "nu", "tol"))
        if min(alpha, beta, mu, nu, tol) < 0:
            raise ValueError(f"alpha, beta, mu, nu, tol must be >= 0, got {(alpha, beta, mu, nu, tol)}")
        n = float(n_total if n_total is not None else self.count)
        Wp, bp = W_prev.detach().to(self.S_zz), b_prev.detach().to(self.S_zz)
        scale, c = n / self.count, n / (n + beta + nu)
        z_bar, x_bar = self.sum_z / self.count, self.sum_x / self.count
        A = scale * self.S_zz - c * n * torch.outer(z_bar, z_bar)
        A.diagonal().add_(alpha + mu + tol)
        C = scale * self.S_zx - c * torch.outer(z_bar, nu * bp + n * x_bar) + mu * Wp
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            W = torch.cholesky_solve(C, L)
        else:  # A numerically singular (dead latents, no ridge): any minimizer will do; take the min-norm one
            logger.debug("PAM decoder system is not positive definite (info=%d); using torch.linalg.lstsq", int(info))
            W = torch.linalg.lstsq(A.cpu(), C.cpu(), driver="gelsd").solution.to(A.device)
        b = (nu * bp + n * (x_bar - z_bar @ W)) / (n + beta + nu)
        return W.to(W_prev.dtype), b.to(b_prev.dtype)


def decoder_closed_form(
    z_BF: Tensor,
    x_BD: Tensor,
    W_prev: Tensor,
    b_prev: Tensor,
    n_total: int | None = None,
    alpha: float = 0.0,
    beta: float = 0.0,
    mu: float = 0.0,
    nu: float = 0.0,
    tol: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """Exact minimizer (W_dec, b_dec) of the proximal ridge least squares above, for one batch.

    Args:
        z_BF: codes of the batch (B, F). x_BD: the (normalized) inputs the SAE reconstructs (B, D).
        W_prev, b_prev: the current decoder (F, D) and bias (D,): the proximal anchors.
        n_total: N, the size of the data set the batch stands for (None: the batch itself).
        alpha, beta: ridge on W and b. mu, nu: proximal weights. tol: jitter added to A's diagonal.
    Returns tensors in W_prev's dtype and device.
    """
    stats = DecoderStatistics(z_BF.shape[-1], x_BD.shape[-1], z_BF.device)
    stats.update(z_BF, x_BD)
    return stats.solve(W_prev, b_prev, n_total, alpha=alpha, beta=beta, mu=mu, nu=nu, tol=tol)


class PAMSGD:
    """Proximal alternating minimization state for one SAE: anchors and the decoder solve.

    Args:
        sae: any hubsae SAE whose reconstruction is `features @ W_dec + b_dec` on the normalized input.
        n_total: number of training vectors N (scales the minibatch normal equations).
        mu_enc, nu_enc: proximal weights on encoder matrices / vectors (1e-3 in the LLM script).
        mu_dec, nu_dec: proximal weights on W_dec / b_dec in the closed-form step.
        alpha, beta: ridge on W_dec / b_dec. tol: jitter on the normal matrix's diagonal.
    """

    def __init__(
        self,
        sae: nn.Module,
        n_total: int,
        mu_enc: float = 1e-3,
        nu_enc: float = 1e-3,
        mu_dec: float = 0.0,
        nu_dec: float = 0.0,
        alpha: float = 0.0,
        beta: float = 0.0,
        tol: float = 1e-8,
    ):
        if n_total <= 0 or min(mu_enc, nu_enc, mu_dec, nu_dec, alpha, beta, tol) < 0:
            raise ValueError("n_total must be positive and every PAM coefficient >= 0")
        missing = [name for name in DECODER_PARAMETERS if not isinstance(getattr(sae, name, None), nn.Parameter)]
        if missing:
            raise ValueError(
                f"{type(sae).__name__} has no decoder parameter(s) {missing}; PAM-SGD needs W_dec and b_dec"
            )
        if getattr(sae.config, "normalize_decoder", False):
            logger.warning("PAM-SGD with normalize_decoder=True: renormalizing W_dec undoes the closed-form solve")
        self.sae = sae
        self.n_total = n_total
        self.mu_enc, self.nu_enc, self.mu_dec, self.nu_dec = mu_enc, nu_enc, mu_dec, nu_dec
        self.alpha, self.beta, self.tol = alpha, beta, tol
        self.anchors: dict[str, Tensor] = {}
        self.snapshot()

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter except the closed-form decoder: what the optimizer should own."""
        return [p for name, p in self.sae.named_parameters() if name not in DECODER_PARAMETERS]

    @torch.no_grad()
    def snapshot(self) -> None:
        """Anchor the proximal terms at the current encoder values."""
        self.anchors = {
            name: p.detach().clone() for name, p in self.sae.named_parameters() if name not in DECODER_PARAMETERS
        }

    def proximal_loss(self) -> Tensor:
        """mu_enc * sum ||W - W_t||^2 over matrices + nu_enc * sum ||b - b_t||^2 over vectors."""
        total = self.sae.W_dec.new_zeros(())
        for name, p in self.sae.named_parameters():
            if name in DECODER_PARAMETERS:
                continue
            coef = self.mu_enc if p.ndim >= 2 else self.nu_enc
            if coef:
                total = total + coef * (p - self.anchors[name]).pow(2).sum()
        return total

    @torch.no_grad()
    def codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(normalized input (B, D), codes (B, F)) exactly as the SAE's forward computes them."""
        sae = self.sae
        sae.check_input(x)
        x_norm, _ = sae.normalize_input(x.reshape(-1, x.shape[-1]))
        out = sae(x.reshape(-1, x.shape[-1]), compute_losses=False)
        return x_norm, out.features

    @torch.no_grad()
    def decoder_step(self, x: Tensor) -> None:
        """Replace W_dec and b_dec by the closed-form minimizer for this batch of activations."""
        self.decoder_step_from([x])

    @torch.no_grad()
    def decoder_step_from(self, batches: Iterable[Tensor]) -> None:
        """The same over many batches (e.g. the whole data set, as the official script does per
        epoch): codes are accumulated batch by batch into `DecoderStatistics`, then solved once."""
        stats = DecoderStatistics(self.sae.config.d_sae, self.sae.config.d_in, self.sae.W_dec.device)
        for x in batches:
            x_norm, z = self.codes(x)
            stats.update(z, x_norm)
        W, b = stats.solve(
            self.sae.W_dec, self.sae.b_dec, self.n_total,
            alpha=self.alpha, beta=self.beta, mu=self.mu_dec, nu=self.nu_dec, tol=self.tol,
        )  # fmt: skip
        self.sae.W_dec.copy_(W)
        self.sae.b_dec.copy_(b)


class DecoderWindow:
    """PAM-SGD inside the Trainer: the decoder is solved once per window of batches, not per batch.

    The official code (github.com/splInterp2025/splInterp) solves the decoder over the whole
    training set once per epoch. A solve from one minibatch instead sets the row of every latent
    that did not fire in it to exactly 0 and, with batch < d_sae, interpolates the batch. Here the
    normal equations are accumulated over `batches` batches (codes of the encoder as it trains;
    the proximal term keeps it near its anchor), then solved once; every `validation_every`-th
    batch of the window is held out to choose the ridge from `ridge_grid` by held-out squared
    error, and the decoder is then solved on the whole window with that ridge. The encoder's
    proximal anchors move only at a solve (so mu_enc ||W - W_t||^2 acts between solves), and
    `prox` keeps the decoder near its previous value (a latent silent for a whole window keeps its
    direction). Ridge and prox are relative to the window's mean diagonal of sum z z^T, so they
    do not depend on the window size or the activation scale.
    """

    def __init__(
        self,
        pam: PAMSGD,
        batches: int = 16,
        validation_every: int = 4,
        ridge_grid: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
        prox: float = 1e-3,
    ):
        if batches < 1 or validation_every < 0 or validation_every == 1 or prox < 0 or min(ridge_grid) < 0:
            raise ValueError(
                f"PAM window: batches >= 1, validation_every 0 (off) or >= 2, prox >= 0 and ridges >= 0; got "
                f"batches={batches}, validation_every={validation_every}, prox={prox}, ridge_grid={list(ridge_grid)}"
            )
        self.pam = pam
        self.batches, self.validation_every = batches, validation_every
        self.ridge_grid, self.prox = tuple(float(r) for r in ridge_grid), prox
        self.seen = 0
        self.ridge = float("nan")  # the ridge chosen at the last solve (relative)
        self._reset()

    def _reset(self) -> None:
        d_sae, d_in, device = self.pam.sae.config.d_sae, self.pam.sae.config.d_in, self.pam.sae.W_dec.device
        self.fit, self.held_out = DecoderStatistics(d_sae, d_in, device), DecoderStatistics(d_sae, d_in, device)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.pam.encoder_parameters()

    def proximal_loss(self) -> Tensor:
        return self.pam.proximal_loss()

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Add one batch's normal equations; solve the decoder when the window is full."""
        x_norm, z = self.pam.codes(x)
        self.seen += 1
        held_out = self.validation_every and self.seen % self.validation_every == 0
        (self.held_out if held_out else self.fit).update(z, x_norm)
        if self.seen % self.batches == 0:
            self.solve()

    @torch.no_grad()
    def solve(self) -> None:
        """Solve the decoder from the batches seen since the last solve (nothing if there are none)."""
        if self.fit.count == 0:
            return
        if self.held_out.count:
            self.ridge = min(self.ridge_grid, key=lambda r: self.held_out.squared_error(*self._solve(self.fit, r)))
        else:
            self.ridge = self.ridge_grid[0]
        W, b = self._solve(self.fit.merged(self.held_out) if self.held_out.count else self.fit, self.ridge)
        self.pam.sae.W_dec.copy_(W)
        self.pam.sae.b_dec.copy_(b)
        self.pam.snapshot()
        logger.debug(
            "PAM-SGD: decoder solved over %d vectors, ridge %g", self.fit.count + self.held_out.count, self.ridge
        )
        self._reset()

    def _solve(self, stats: DecoderStatistics, ridge: float) -> tuple[Tensor, Tensor]:
        scale = float(stats.S_zz.diagonal().mean()) or 1.0
        sae = self.pam.sae
        return stats.solve(sae.W_dec, sae.b_dec, alpha=ridge * scale, mu=self.prox * scale, tol=self.pam.tol)

    def state_dict(self) -> dict:
        return {
            "seen": self.seen,
            "ridge": self.ridge,
            "anchors": self.pam.anchors,
            "fit": self.fit.state_dict(),
            "held_out": self.held_out.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.ridge = int(state["seen"]), float(state["ridge"])
        self.pam.anchors = {name: t.to(self.pam.sae.W_dec.device) for name, t in state["anchors"].items()}
        self.fit.load_state_dict(state["fit"])
        self.held_out.load_state_dict(state["held_out"])
