"""Logistic-regression probes in torch, the building block of sparse probing and absorption.

`fit_probe` fits C one-vs-rest logistic probes at once (C = 1 for a binary task) on standardized
inputs, full batch with L-BFGS and an L2 penalty on the weights (sklearn's `LogisticRegression`
default solver and penalty, which SAEBench's probes use; sklearn is not a dependency here).
`top_k_mean_diff` picks the k inputs whose class means differ most, SAEBench's sparse-probing
selection (Karvonen et al. 2025, arXiv 2503.09532, Sec. 3.4 "Sparse Probing"; its
`get_top_k_mean_diff_mask` ranks |mean(positive) - mean(negative)|), and `fit_k_sparse_probe`
fits a probe on those k inputs only.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "LogisticProbe",
    "accuracy",
    "fit_k_sparse_probe",
    "fit_probe",
    "top_k_mean_diff",
    "train_test_split",
]


@dataclass
class LogisticProbe:
    """C one-vs-rest logistic probes on `features` (indices into the input's last dim; None = all).

    logits(x) = ((x[:, features] - mean) / std) @ weight + bias, weight (D, C), bias (C,).
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor
    features: Tensor | None = None

    def _select(self, x: Tensor) -> Tensor:
        return x if self.features is None else x[:, self.features]

    def logits(self, x: Tensor) -> Tensor:
        """(N, d) -> (N, C) logits; class c is predicted present where its logit is > 0."""
        z = (self._select(x).float() - self.mean) / self.std
        return z @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """Binary probes: 1 where the logit is > 0. C > 1: the class of the largest logit."""
        logits = self.logits(x)
        return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)

    def directions(self) -> Tensor:
        """(C, D) unit directions in the input's own units (the weight undoes the standardization)."""
        raw = (self.weight / self.std[:, None]).T
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _check(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"probe inputs must be (N, d), got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0],) and y.shape != (x.shape[0], y.shape[-1]):
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match inputs of shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"a probe needs at least 2 examples, got {x.shape[0]}")


def _targets(y: Tensor, num_classes: int | None) -> Tensor:
    """(N,) int labels -> (N, C) 0/1 targets; C = 1 for two classes (the probe of class 1)."""
    if y.ndim == 2:
        return y.float()
    classes = num_classes or int(y.max()) + 1
    if classes <= 2:
        return (y == 1).float()[:, None]
    return torch.nn.functional.one_hot(y.long(), classes).float()


def fit_probe(
    x: Tensor,
    y: Tensor,
    l2: float = 1e-3,
    balanced: bool = True,
    num_classes: int | None = None,
    max_iter: int = 200,
    features: Tensor | None = None,
    standardize: bool = True,
) -> LogisticProbe:
    """Fit one-vs-rest logistic probes: minimize mean BCE + l2/2 * ||W||^2 on standardized x.

    `y` is (N,) int labels (two classes: one probe of class 1; more: one probe per class) or (N, C)
    0/1 targets. `balanced` weighs each probe's positives and negatives to equal total weight
    (sklearn's class_weight="balanced"), so a rare class is not fitted as "never". `features`
    selects input columns (recorded on the probe, so it is applied to the full input again).
    `standardize=False` fits on the raw inputs (mean 0, std 1 recorded): a column that is constant
    in training but not at test time then cannot get a huge standardized value.
    """
    x = x if features is None else x[:, features]
    _check(x, y)
    t = _targets(y, num_classes)
    x = x.float()
    if standardize:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
    z = (x - mean) / std
    pos = t.mean(0).clamp(1e-6, 1 - 1e-6)
    w_pos, w_neg = (0.5 / pos, 0.5 / (1 - pos)) if balanced else (torch.ones_like(pos), torch.ones_like(pos))
    sample_w = t * w_pos + (1 - t) * w_neg
    weight = torch.zeros(z.shape[1], t.shape[1], requires_grad=True)
    bias = torch.zeros(t.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-7)

    def closure() -> Tensor:
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, t, weight=sample_w)
        loss = bce * t.shape[1] + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LogisticProbe(weight.detach(), bias.detach(), mean, std, features)


def accuracy(probe: LogisticProbe, x: Tensor, y: Tensor) -> float:
    """Fraction of examples whose predicted class is `y` (binary probes: y in {0, 1})."""
    return float((probe.predict(x) == y.long()).float().mean())


def top_k_mean_diff(x: Tensor, y: Tensor, k: int, signed: bool = False) -> Tensor:
    """The k columns of x with the largest |mean over y == 1 - mean over y == 0| (SAEBench's rank).

    `signed` ranks the raw difference instead: only columns larger on the positives, i.e. latents
    that fire *for* the class (what a first-letter "main latent" must do).
    """
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the input width {x.shape[1]}")
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        raise ValueError("top_k_mean_diff needs both positive (y == 1) and negative (y == 0) examples")
    diff = x[pos].float().mean(0) - x[neg].float().mean(0)
    return (diff if signed else diff.abs()).topk(k).indices


def fit_k_sparse_probe(x: Tensor, y: Tensor, k: int, signed: bool = False, **fit_kw) -> LogisticProbe:
    """A binary probe on the k columns `top_k_mean_diff` picks; its `features` are those columns."""
    return fit_probe(x, y, features=top_k_mean_diff(x, y, k, signed=signed), **fit_kw)


def train_test_split(
    n: int, test_fraction: float = 0.2, seed: int = 0, labels: Sequence[int] | Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Shuffled (train, test) index tensors; with `labels`, each class is split alike (stratified)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    gen = torch.Generator().manual_seed(seed)
    groups = [torch.arange(n)] if labels is None else _class_indices(torch.as_tensor(labels))
    train, test = [], []
    for idx in groups:
        idx = idx[torch.randperm(len(idx), generator=gen)]
        cut = max(1, round(len(idx) * test_fraction)) if len(idx) > 1 else 0
        test.append(idx[:cut])
        train.append(idx[cut:])
    return torch.cat(train), torch.cat(test)


def _class_indices(labels: Tensor) -> list[Tensor]:
    return [torch.nonzero(labels == c).flatten() for c in labels.unique()]
