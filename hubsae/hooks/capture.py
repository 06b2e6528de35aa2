"""The one way hubsae reads activations off a model: training harvests, evaluation and attribution
call `capture`, which uses the same hooks as the interventions (`attach.add_hook`), so a hookpoint
means the same tensor everywhere (also `:input` passed as `hidden_states=`)."""

from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import Tensor, nn

from .attach import add_hook, hooks_removed
from .hookpoints import Hookpoint, resolve_hookpoint

T = TypeVar("T")


class _AllCaptured(Exception):
    """Raised from a hook once every hookpoint is read; never escapes `capture`."""


def capture(
    model: nn.Module,
    hookpoints: Sequence[str],
    run: Callable[[], T],
    stop_when_done: bool = False,
    resolved: Sequence[Hookpoint] | None = None,
) -> tuple[T | None, dict[str, Tensor]]:
    """Run `run()` (a forward pass of `model`) and return (its result, {hookpoint: activation}).

    Activations are detached and keyed by the name the caller gave (a TransformerLens name stays
    a TransformerLens name). `stop_when_done` ends the forward pass at the last hookpoint (the
    result is then None): a harvest never pays for the layers above it. Every hook is removed on
    return or error; a hookpoint the pass never reached is a RuntimeError naming it. `resolved`
    passes the hookpoints already resolved (a caller that captures every batch resolves once).
    """
    names = list(hookpoints)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate hookpoints: {names}")
    if resolved is None:
        resolved = [resolve_hookpoint(model, name) for name in names]
    acts: dict[str, Tensor] = {}

    def grab(name: str) -> Callable[[Tensor], None]:
        def fn(x: Tensor) -> None:
            acts[name] = x.detach()
            if stop_when_done and len(acts) == len(names):
                raise _AllCaptured

        return fn

    result = None
    handles = []
    with hooks_removed(handles):
        handles += [add_hook(hp, grab(name)) for name, hp in zip(names, resolved, strict=True)]
        try:
            result = run()
        except _AllCaptured:
            pass
    missing = [name for name in names if name not in acts]
    if missing:
        raise RuntimeError(f"hookpoints {missing} were not reached by the forward pass of {type(model).__name__}")
    return result, {name: acts[name] for name in names}
