"""Activations of many hookpoints from one forward pass that stops after the last one needed
(`hooks.capture` with `stop_when_done`): the layers after the deepest hooked module never run."""

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..hooks import resolve_hookpoint
from ..hooks.capture import capture

logger = logging.getLogger(__name__)


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

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> dict[str, Tensor]:
        # use_cache=False: a KV cache would be built for layers we never finish
        def forward():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)

        return capture(self.model, self.hookpoints, forward, stop_when_done=True, resolved=self.resolved)[1]
