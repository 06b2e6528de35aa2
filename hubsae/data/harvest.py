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

logger = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised from a hook once every hookpoint is captured; never escapes `Harvester`."""


def _first_tensor(value) -> Tensor:
    # decoder layers may return a tuple (hidden_states, attn weights, ...); the activation is first
    if isinstance(value, (tuple, list)):
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(
            f"hooked module produced {type(value).__name__}, expected a tensor or a tuple starting with one"
        )
    return value


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
        handles = []

        def make_hook(name: str, site: str):
            def hook(module, args, output=None):
                value = args if site == "input" else output
                captured[name] = _first_tensor(value).detach()
                if len(captured) == total:
                    raise _StopForward

            return hook

        try:
            # keyed by the name the caller used: a translated name (blocks.6.hook_resid_post) resolves to another
            for name, hp in zip(self.hookpoints, self.resolved, strict=True):
                hook = make_hook(name, hp.site)
                if hp.site == "input":
                    handles.append(hp.module.register_forward_pre_hook(hook))
                else:
                    handles.append(hp.module.register_forward_hook(hook))
            yield
        finally:
            for handle in handles:
                handle.remove()

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
