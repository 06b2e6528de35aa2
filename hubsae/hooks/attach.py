"""Registering activation hooks on a model: unpacking module outputs and inputs, token positions.

A hook function gets the activation at its hookpoint, (..., seq, d), and returns a replacement of
the same shape or None to leave it alone. Decoder layers return a tensor or a tuple depending on
the transformers version and the module (attention returns `(output, weights)`); only the first
element is the activation, the rest is passed through untouched.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .hookpoints import Hookpoint, unwrap_peft

logger = logging.getLogger(__name__)

HookFn = Callable[[Tensor], Tensor | None]
POSITIONS = ("all", "prompt", "generated")


def _first(value) -> tuple[Tensor, Callable[[Tensor], object]]:
    """The activation inside a module output and a function that puts a replacement back."""
    if isinstance(value, Tensor):
        return value, lambda new: new
    if isinstance(value, tuple) and value and isinstance(value[0], Tensor):
        rebuild = tuple if type(value) is tuple else lambda items: type(value)(*items)  # namedtuples too
        return value[0], lambda new: rebuild((new, *value[1:]))
    if hasattr(value, "to_tuple") and isinstance(value[0], Tensor):  # a transformers ModelOutput
        key = next(iter(value.keys()))

        def repack(new: Tensor):
            out = value.__class__(**value)
            out[key] = new
            return out

        return value[0], repack
    raise TypeError(f"cannot find the activation tensor in a module output of type {type(value).__name__}")


def _output_hook(hookpoint: Hookpoint, fn: HookFn):
    def hook(module: nn.Module, args, output):
        x, repack = _first(output)
        new = fn(x)
        return None if new is None else repack(_checked(new, x, hookpoint))

    return hook


def _input_hook(hookpoint: Hookpoint, fn: HookFn):
    def hook(module: nn.Module, args: tuple, kwargs: dict):
        if args and isinstance(args[0], Tensor):
            new = fn(args[0])
            return None if new is None else ((_checked(new, args[0], hookpoint), *args[1:]), kwargs)
        if isinstance(kwargs.get("hidden_states"), Tensor):
            x = kwargs["hidden_states"]
            new = fn(x)
            return None if new is None else (args, {**kwargs, "hidden_states": _checked(new, x, hookpoint)})
        raise TypeError(
            f"hookpoint {hookpoint.name!r}: {type(module).__name__} was called without a tensor as its first "
            "argument or `hidden_states=`, so its input cannot be read"
        )

    return hook


def _checked(new: Tensor, old: Tensor, hookpoint: Hookpoint) -> Tensor:
    if new.shape != old.shape:
        raise RuntimeError(
            f"hookpoint {hookpoint.name!r}: an intervention returned shape {tuple(new.shape)} for an activation "
            f"of shape {tuple(old.shape)}"
        )
    return new.to(old.dtype) if new.dtype != old.dtype else new


def add_hook(hookpoint: Hookpoint, fn: HookFn) -> RemovableHandle:
    """Register `fn` at a hookpoint; the caller removes the handle (see `hooks_removed`)."""
    if hookpoint.site == "input":
        return hookpoint.module.register_forward_pre_hook(_input_hook(hookpoint, fn), with_kwargs=True)
    return hookpoint.module.register_forward_hook(_output_hook(hookpoint, fn))


@contextlib.contextmanager
def hooks_removed(handles: list[RemovableHandle]) -> Iterator[None]:
    """Remove every handle in `handles` on exit, whatever happens inside."""
    try:
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()
        handles.clear()


@dataclass
class _Call:
    offset: int  # tokens already in the KV cache before this forward
    seq_len: int


class PositionTracker:
    """Which absolute positions the tokens of the running forward occupy, and where the prompt ends.

    A pre-hook on the backbone reads each call's inputs. A call with an empty cache starts a new
    prompt (its padded length is the prompt length) unless it extends the previous prompt's
    tokens, which is how generate() without a KV cache proceeds. With left padding every row
    shares the padded length, so positions are the same for all rows.
    """

    def __init__(self) -> None:
        self.call: _Call | None = None
        self.prompt_len: int | None = None
        self._prompt_ids: Tensor | None = None

    def attach(self, model: nn.Module) -> RemovableHandle:
        base = unwrap_peft(model)
        backbone = getattr(base, "base_model", base)  # transformers' backbone (LlamaModel, GPT2Model, ...)
        return backbone.register_forward_pre_hook(self._pre_hook, with_kwargs=True)

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], Tensor) else None)
        embeds = kwargs.get("inputs_embeds")
        tokens = ids if ids is not None else embeds
        if tokens is None:
            raise TypeError(f"{type(module).__name__} was called without input_ids or inputs_embeds")
        seq_len = tokens.shape[1]
        offset = cache_offset(kwargs, seq_len)
        if offset == 0 and not self._extends_prompt(ids):
            self.prompt_len = seq_len
            self._prompt_ids = ids
        self.call = _Call(offset, seq_len)

    def _extends_prompt(self, ids: Tensor | None) -> bool:
        p = self._prompt_ids
        if ids is None or p is None or ids.shape[0] != p.shape[0] or ids.shape[1] <= p.shape[1]:
            return False
        return bool((ids[:, : p.shape[1]] == p.to(ids.device)).all())

    def selection(self, positions: str, seq_len: int) -> slice:
        """The slice of this call's token axis that `positions` selects.

        "prompt": positions before the prompt's end. "generated": the last prompt position and every
        later one, i.e. the positions whose outputs predict generated tokens (so the first generated
        token is steered too).
        """
        if positions == "all":
            return slice(0, seq_len)
        call = self.call
        if call is None or self.prompt_len is None:
            raise RuntimeError(
                f"positions={positions!r} needs the forward to run through the model's backbone, which did not run"
            )
        if call.seq_len != seq_len:
            raise RuntimeError(
                f"positions={positions!r}: the hooked activation has {seq_len} tokens but the model's input has "
                f"{call.seq_len}; use positions='all' for this hookpoint"
            )
        if positions == "prompt":
            return slice(0, max(0, min(seq_len, self.prompt_len - call.offset)))
        return slice(min(seq_len, max(0, self.prompt_len - 1 - call.offset)), seq_len)


def cache_offset(kwargs: dict, seq_len: int) -> int:
    """How many tokens the KV cache holds before this call, from whatever the backbone was given.

    transformers has renamed the cache kwarg across releases (`past_key_values`, then `cache` in
    5.24) and dropped `cache_position`; reading one name breaks on the next release. So: any
    cache object under any name, else `cache_position`, else a 2-D attention mask longer than the
    input (generate() always passes the mask over cached + new tokens).
    """
    for value in kwargs.values():
        if hasattr(value, "get_seq_length"):  # a transformers Cache, whatever the kwarg is called
            return int(value.get_seq_length())
    for name in ("past_key_values", "past_key_value", "cache", "layer_past"):
        legacy = kwargs.get(name)
        if isinstance(legacy, (tuple, list)) and legacy and legacy[0] is not None:  # ((k, v), ...) caches
            return int(legacy[0][0].shape[-2])
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, Tensor) and cache_position.numel():
        return int(cache_position.reshape(-1)[0])
    mask = kwargs.get("attention_mask")
    if isinstance(mask, Tensor) and mask.dim() == 2 and mask.shape[1] > seq_len:
        return int(mask.shape[1] - seq_len)
    return 0


def check_positions(positions: str) -> None:
    if positions not in POSITIONS:
        raise ValueError(f"positions={positions!r} is not one of {POSITIONS}")
