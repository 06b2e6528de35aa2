"""Activations of many hookpoints from one forward pass that stops after the last one needed.

Hooks capture each hookpoint's activation; once every hookpoint has been captured, the hook
raises a private exception that unwinds the forward pass, so the layers after the deepest
hooked module never run. All hooks are removed on every exit path.
"""

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..hooks import resolve_hookpoint
from ..hooks.attach import add_hook, hooks_removed

logger = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised from a hook once every hookpoint is captured; never escapes `Harvester`."""


class Harvester:
    """Reads the activations at `hookpoints` of `model` for a batch of token ids.

    `harvester(input_ids)` returns `{hookpoint: (B, T, d) tensor}`, detached.
    """

    def __init__(self, model: nn.Module, hookpoints: Sequence[str]):
        if not hookpoints:
            raise ValueError("Harvester needs at least one hookpoint")
        if len(set(hookpoints)) != len(hookpoints):
            raise ValueError(f"duplicate hookpoints: {list(hookpoints)}")
        self.model = model
        self.hookpoints = list(hookpoints)
        self.resolved = [resolve_hookpoint(model, name) for name in self.hookpoints]

    @contextmanager
    def _hooks(self, captured: dict[str, Tensor]) -> Iterator[None]:
        total = len(self.resolved)

        def capture(name: str):
            def fn(x: Tensor) -> None:
                captured[name] = x.detach()
                if len(captured) == total:
                    raise _StopForward

            return fn

        # the same hooks as record/splice: they read `:input` from `hidden_states=` too
        # keyed by the name the caller used: a translated name (blocks.6.hook_resid_post) resolves to another
        handles = [add_hook(hp, capture(name)) for name, hp in zip(self.hookpoints, self.resolved, strict=True)]
        with hooks_removed(handles):
            yield

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        captured: dict[str, Tensor] = {}
        with self._hooks(captured):
            try:
                # use_cache=False: a KV cache would be built for layers we never finish
                self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            except _StopForward:
                pass
        missing = [name for name in self.hookpoints if name not in captured]
        if missing:
            raise RuntimeError(f"hookpoints {missing} were never reached during the forward pass")
        return {name: captured[name] for name in self.hookpoints}
