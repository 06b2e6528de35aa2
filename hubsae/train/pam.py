"""PAM-SGD (SplInterp, arXiv 2505.11836; papers.md §3.3-3.4): proximal alternating training.

The encoder (every parameter except W_dec and b_dec) takes SGD/Adam steps on the SAE loss plus
proximal "stay-close" terms mu_enc ||W - W_t||^2 + nu_enc ||b - b_t||^2 around anchors W_t, b_t.
The decoder (W_dec, b_dec) is not trained by gradient: each minibatch it is set to the exact
minimizer of the (N/|B|)-rescaled proximal ridge least-squares problem

    min_{W,b} (N/|B|) sum_{r in B} ||x_r - z_r W - b||^2 + alpha ||W||^2 + beta ||b||^2
              + mu ||W - W_t||^2 + nu ||b - b_t||^2,

with z_r the codes of the current encoder (row convention: W is (d_sae, d_in), x_hat = z W + b).
Zeroing the gradients (papers.md §3.4, transposed) gives, with n = N (the dataset size) and
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
        .proximal_loss() -> scalar Tensor              # add to the SAE loss before backward
        .snapshot() -> None                            # move the anchors to the current values
A step: decoder_step(x); loss = sae(x).loss + proximal_loss(); backward; optimizer.step();
snapshot() (per step, or per epoch as the official script does). Train with
`normalize_decoder=False`: renormalizing the decoder rows would undo the exact solve.
"""

import logging

import torch
from torch import Tensor, nn

__all__ = ["PAMSGD", "decoder_closed_form", "DECODER_PARAMETERS"]

logger = logging.getLogger(__name__)

DECODER_PARAMETERS = ("W_dec", "b_dec")


def _normal_equations(z: Tensor, x: Tensor, W_prev: Tensor, b_prev: Tensor, n: float, coefs: tuple) -> tuple:
    alpha, beta, mu, nu, tol = coefs
    scale = n / z.shape[0]
    z_bar, x_bar = z.mean(0), x.mean(0)
    c = n / (n + beta + nu)
    target_mean = nu * b_prev + n * x_bar  # (D,)
    A = scale * (z.T @ z) - c * n * torch.outer(z_bar, z_bar)
    A.diagonal().add_(alpha + mu + tol)
    C = scale * (z.T @ x) - c * torch.outer(z_bar, target_mean) + mu * W_prev
    return A, C, z_bar, x_bar


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
    """Exact minimizer (W_dec, b_dec) of the proximal ridge least squares above.

    Args:
        z_BF: codes of the batch (B, F). x_BD: the (normalized) inputs the SAE reconstructs (B, D).
        W_prev, b_prev: the current decoder (F, D) and bias (D,): the proximal anchors.
        n_total: N, the size of the data set the batch stands for (None: the batch itself).
        alpha, beta: ridge on W and b. mu, nu: proximal weights. tol: jitter added to A's diagonal.
    Returns tensors in W_prev's dtype and device.
    """
    if z_BF.ndim != 2 or x_BD.ndim != 2 or z_BF.shape[0] != x_BD.shape[0]:
        raise ValueError(f"codes and inputs must be (B, F) and (B, D), got {tuple(z_BF.shape)} and {tuple(x_BD.shape)}")
    if W_prev.shape != (z_BF.shape[1], x_BD.shape[1]) or b_prev.shape != (x_BD.shape[1],):
        raise ValueError(f"decoder shapes {tuple(W_prev.shape)}, {tuple(b_prev.shape)} do not match codes/inputs")
    if min(alpha, beta, mu, nu, tol) < 0:
        raise ValueError(f"alpha, beta, mu, nu, tol must be >= 0, got {(alpha, beta, mu, nu, tol)}")
    n = float(n_total if n_total is not None else z_BF.shape[0])
    f64 = dict(dtype=torch.float64)
    z, x = z_BF.to(**f64), x_BD.to(**f64)
    Wp, bp = W_prev.detach().to(**f64), b_prev.detach().to(**f64)
    A, C, z_bar, x_bar = _normal_equations(z, x, Wp, bp, n, (alpha, beta, mu, nu, tol))
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        W = torch.cholesky_solve(C, L)
    else:  # A numerically singular (dead latents, no ridge): any minimizer will do; take the min-norm one
        logger.debug("PAM decoder system is not positive definite (info=%d); using torch.linalg.lstsq", int(info))
        W = torch.linalg.lstsq(A.cpu(), C.cpu(), driver="gelsd").solution.to(A.device)
    b = (nu * bp + n * (x_bar - z_bar @ W)) / (n + beta + nu)
    return W.to(W_prev.dtype), b.to(b_prev.dtype)


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
        x_norm, z = self.codes(x)
        W, b = decoder_closed_form(
            z, x_norm, self.sae.W_dec, self.sae.b_dec, self.n_total,
            self.alpha, self.beta, self.mu_dec, self.nu_dec, self.tol,
        )  # fmt: skip
        self.sae.W_dec.copy_(W)
        self.sae.b_dec.copy_(b)
