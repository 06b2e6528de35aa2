"""Metrics for `attribute`: a scalar of the logits. Built in: a token's log-prob, a logit difference."""

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

Metric = Callable[[Tensor], Tensor]

__all__ = ["Metric", "checked_metric", "logit_diff", "token_id", "token_logprob"]


def token_id(token: int | str, tokenizer=None) -> int:
    """A token's id: an int as given, a string through the tokenizer (it must be one token)."""
    if isinstance(token, numbers.Integral) and not isinstance(token, bool):
        if token < 0:
            raise ValueError(f"token id {token} is negative")
        return int(token)
    if not isinstance(token, str):
        raise TypeError(f"a token is an int id or a string, got {type(token).__name__}")
    if tokenizer is None:
        raise ValueError(f"token {token!r} is a string: pass tokenizer= to turn it into an id")
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"token {token!r} is not in the vocabulary as one token: it encodes to {len(ids)} ids {ids} {pieces}; "
            "pick a single token (mind the leading space, e.g. ' Paris')"
        )
    return ids[0]


def _check_vocab(ids: list[int], logits: Tensor) -> None:
    vocab = logits.shape[-1]
    bad = [i for i in ids if i >= vocab]
    if bad:
        raise ValueError(f"token ids {bad} are not in the vocabulary: the logits have {vocab} entries")


def token_logprob(token: int | str, tokenizer=None, position: int = -1) -> Metric:
    """Metric: log p(token) at `position` (default: the last), summed over the batch."""
    tid = token_id(token, tokenizer)

    def metric(logits: Tensor) -> Tensor:
        _check_vocab([tid], logits)
        return torch.log_softmax(logits[:, position].float(), dim=-1)[:, tid].sum()

    metric.__name__ = f"logprob[{token!r}]"
    return metric


def logit_diff(token: int | str, other: int | str, tokenizer=None, position: int = -1) -> Metric:
    """Metric: logit(token) - logit(other) at `position` (default: the last), summed over the batch."""
    a, b = token_id(token, tokenizer), token_id(other, tokenizer)

    def metric(logits: Tensor) -> Tensor:
        _check_vocab([a, b], logits)
        last = logits[:, position].float()
        return (last[:, a] - last[:, b]).sum()

    metric.__name__ = f"logit[{token!r}] - logit[{other!r}]"
    return metric


def checked_metric(metric: Metric, logits: Tensor) -> Tensor:
    """metric(logits), checked: a finite real scalar that depends on the logits."""
    value = metric(logits)
    name = getattr(metric, "__name__", type(metric).__name__)
    if not isinstance(value, Tensor):
        raise TypeError(f"the metric {name} must return a scalar tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise ValueError(
            f"the metric {name} must return a scalar, got a tensor of shape {tuple(value.shape)}; "
            "reduce it (e.g. .sum() or .mean())"
        )
    if not value.is_floating_point():
        raise TypeError(f"the metric {name} must return a float tensor, got dtype {value.dtype}")
    if logits.requires_grad and not value.requires_grad:
        raise ValueError(f"the metric {name} does not depend on the logits (its value carries no gradient)")
    if not math.isfinite(float(value.detach())):
        raise ValueError(f"the metric {name} is {float(value.detach())} on the clean run")
    return value.reshape(())
