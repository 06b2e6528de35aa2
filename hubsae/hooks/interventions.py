"""Context managers that attach SAEs to a model: record, splice, ablate, clamp, steer.

Semantics (x is the activation at the hookpoint, f = sae.encode(x), x_hat its reconstruction):
- `record`: stores f, sparse (indices + values per token); the model runs unchanged.
- `splice`: x -> x_hat, or x_hat + (x - x_hat) with `keep_error=True`.
- `ablate`: x -> x - sum_{i in S} f_i d_i: only the ablated features' contribution leaves; the
  error term and every other feature stay (delta = decode(edited) - decode(f)).
- `clamp`: x -> x + sum_{i in S} (v_i - f_i) d_i: the features are pinned to v_i, error kept.
- `steer`: x -> x + sum_i c_i u_i, u_i the decoder row W_dec[i] scaled to unit norm; with
  `relative=True` the added vector is multiplied by each token's norm ||x||.
Here d_i is the decoder row in the model's units (divided by `input_scale`, or multiplied by the
token norm, as the SAE's input normalization requires).

Transcoders (`config.hookpoint_out`, or `hookpoint_out=`) read x at `hookpoint` and write at
`hookpoint_out`, whose activation y is what changes: `splice` sets y -> y_hat (or y_hat + (y - y_hat));
`ablate`/`clamp` add their delta, computed from x's features, to y; `steer` adds to y (the decoder
rows live in the written space); `record` encodes x. The read point sees the activation of the
running forward, with upstream replacements already made (`read="replaced"`, the default: a
replacement model where each transcoder reads what the earlier ones wrote); `splice(..., read="clean")`
first runs the forward without this splice's replacements and feeds the transcoders those clean
activations (each forward then runs twice; not with a KV cache holding earlier tokens).

`positions` ("all", "prompt", "generated") selects tokens: "generated" is the last prompt position
and every later one (the positions that predict new tokens), in a plain forward, in generate()
with or without the KV cache, and with left padding.

Each manager registers forward hooks on entry and removes them on exit, also on error; the model's
parameters are never touched. Managers compose by nesting; hooks on the same module run in the
order they were entered.
"""

import contextlib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..saes.base import SAE
from .attach import HookFn, PositionTracker, add_hook, cache_offset, check_positions, hooks_removed
from .capture import capture
from .features import SparseFeatures, decode_linear, encode, reconstruct, to_model_units, unit_directions
from .hookpoints import Hookpoint, activation_width, resolve_hookpoint, unwrap_peft

SAEs = SAE | Sequence[SAE] | Mapping[str, SAE]


class _Reusable:
    """A context manager that may be entered again after it exited (not while it is active).

    contextlib's generator managers fail a second `with` with an opaque "generator didn't yield";
    `cm = steer(...)` used in two `with` blocks is natural, so each entry runs the manager afresh.
    """

    def __init__(self, factory, args: tuple, kwargs: dict):
        self._factory, self._args, self._kwargs = factory, args, kwargs
        self._active: contextlib.AbstractContextManager | None = None

    def __enter__(self):
        if self._active is not None:
            raise RuntimeError(
                f"hubsae.{self._factory.__name__}(...) is already active; nest a new call instead of re-entering it"
            )
        active = self._factory(*self._args, **self._kwargs)
        value = active.__enter__()
        self._active = active
        return value

    def __exit__(self, *exc):
        active, self._active = self._active, None
        return active.__exit__(*exc)


def reusable(generator_fn):
    """`contextlib.contextmanager`, but each `with` on the returned object starts it anew."""
    factory = contextlib.contextmanager(generator_fn)
    signature = inspect.signature(generator_fn)

    @functools.wraps(generator_fn)
    def make(*args, **kwargs) -> _Reusable:
        signature.bind(*args, **kwargs)  # a wrong call fails here, not at the later `with`
        return _Reusable(factory, args, kwargs)

    return make


def attachments(model: nn.Module, saes: SAEs, hookpoint: str | None = None) -> list[tuple[Hookpoint, SAE]]:
    """(hookpoint, SAE) pairs, each checked before any forward: the name resolves and the widths match.

    `saes` is one SAE, a list of SAEs (each at its `config.hookpoint`), or {hookpoint: SAE}.
    `hookpoint` overrides the SAEs' own hookpoint.
    """
    if isinstance(saes, SAE):
        pairs = [(hookpoint or saes.config.hookpoint, saes)]
    elif isinstance(saes, Mapping):
        if hookpoint is not None:
            raise ValueError("pass hookpoints as the keys of the mapping or as `hookpoint=`, not both")
        pairs = list(saes.items())
    else:
        pairs = [(hookpoint or sae.config.hookpoint, sae) for sae in saes]
    if not pairs:
        raise ValueError("no SAE given")
    resolved = []
    for name, sae in pairs:
        if not isinstance(sae, SAE):
            raise TypeError(f"expected an SAE, got {type(sae).__name__}")
        if name is None:
            raise ValueError(
                f"{type(sae).__name__} has no config.hookpoint; pass hookpoint='model.layers.N' (or similar)"
            )
        hp = resolve_hookpoint(model, name)
        width = activation_width(model, hp)
        if width is not None and width != sae.config.d_in:
            raise ValueError(
                f"{type(sae).__name__} has d_in={sae.config.d_in} but the activation at hookpoint {hp.name!r} "
                f"(asked as {name!r}) has width {width}"
            )
        resolved.append((hp, sae))
    return resolved


def write_point(model: nn.Module, sae: SAE, read: Hookpoint, hookpoint_out: str | None = None) -> Hookpoint:
    """Where `sae` writes: `hookpoint_out` (else its config's), or the point it reads; width checked."""
    name = hookpoint_out or sae.config.hookpoint_out
    write = read if name is None else resolve_hookpoint(model, name)
    if write.name == read.name:
        if sae.config.resolved_d_out != sae.config.d_in:
            raise ValueError(
                f"{type(sae).__name__} writes width d_out={sae.config.resolved_d_out}, not its input's "
                f"{sae.config.d_in}: pass hookpoint_out= (or set config.hookpoint_out)"
            )
        return read
    width = activation_width(model, write)
    if width is not None and width != sae.config.resolved_d_out:
        raise ValueError(
            f"{type(sae).__name__} has d_out={sae.config.resolved_d_out} but the activation at its write point "
            f"{write.name!r} has width {width}"
        )
    return write


def _check_width(x: Tensor, sae: SAE, hookpoint: Hookpoint, width: int | None = None) -> None:
    """For modules whose width `activation_width` could not tell before the forward (`width`: d_in)."""
    width = sae.config.d_in if width is None else width
    if x.shape[-1] != width:
        raise ValueError(
            f"{type(sae).__name__} expects width {width} but the activation at hookpoint {hookpoint.name!r} "
            f"has shape {tuple(x.shape)}"
        )


def _on_sae(x: Tensor, sae: SAE, hookpoint: Hookpoint) -> Tensor:
    """x on the SAE's device and dtype, after checking its width."""
    _check_width(x, sae, hookpoint)
    return x.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)


ReadWriteFn = Callable[[Tensor, Tensor], Tensor | None]


def read_write_hooks(
    read: Hookpoint, write: Hookpoint, fn: ReadWriteFn, source: "CleanReads | None" = None
) -> list[tuple[Hookpoint, HookFn]]:
    """Hooks calling fn(x at `read`, y at `write`) at the write point, whose activation fn's result replaces.

    An SAE (read is write) gets fn(x, x). A transcoder's read hook keeps x of the running forward for
    the write hook, which must come after it; with `source` (read="clean") x is its clean activation.
    """
    if source is not None:  # nothing is replaced while the clean pass itself runs
        return [(write, lambda y: None if source.active else fn(source(read.name), y))]
    if write is read:
        return [(read, lambda x: fn(x, x))]
    slot: dict[str, Tensor] = {}

    def keep(x: Tensor) -> None:
        slot["x"] = x

    def put(y: Tensor) -> Tensor | None:
        if "x" not in slot:
            raise RuntimeError(
                f"the transcoder writing at {write.name!r} reads {read.name!r}, which this forward pass has not "
                "reached before the write point; a transcoder's read point must run before its write point"
            )
        return fn(slot.pop("x"), y)

    return [(read, keep), (write, put)]


class CleanReads:
    """`read="clean"`: before each forward, the read points' activations from the same forward without
    this context's replacements (`active` is True while that pass runs, and the replacements wait)."""

    def __init__(self, reads: list[Hookpoint]):
        self.reads = list({hp.name: hp for hp in reads}.values())
        self.active = False
        self.acts: dict[str, Tensor] = {}

    def attach(self, model: nn.Module):
        return unwrap_peft(model).register_forward_pre_hook(self._pre_hook, with_kwargs=True)

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.active:
            return
        tokens = kwargs.get("input_ids", kwargs.get("inputs_embeds", args[0] if args else None))
        if cache_offset(kwargs, tokens.shape[1] if isinstance(tokens, Tensor) else 0) > 0:
            raise RuntimeError(
                'splice(..., read="clean") runs every forward twice and cannot reuse a KV cache holding earlier '
                "tokens; call the model (or generate) with use_cache=False"
            )
        clean = {k: v for k, v in kwargs.items() if not hasattr(v, "get_seq_length") and k != "past_key_values"}
        clean["use_cache"] = False
        self.active = True
        try:
            names = [hp.name for hp in self.reads]
            self.acts = capture(
                module, names, lambda: module(*args, **clean), stop_when_done=True, resolved=self.reads
            )[1]
        finally:
            self.active = False

    def __call__(self, name: str) -> Tensor:
        return self.acts[name]


@contextlib.contextmanager
def _hooked(model: nn.Module, hooks: list[tuple[Hookpoint, HookFn]], tracker: PositionTracker | None):
    handles = []
    with hooks_removed(handles):
        if tracker is not None:
            handles.append(tracker.attach(model))
        for hp, fn in hooks:
            handles.append(add_hook(hp, fn))
        yield


# ---- record ------------------------------------------------------------------------------------


class Recording:
    """What `record` captured: per hookpoint, one `SparseFeatures` per forward call.

    `rec[key]` concatenates a hookpoint's calls along the token axis (the prefill and each decode
    step of a cached generate() line up into one sequence); key is the hookpoint as given, its
    canonical module path, or the SAE object. Padding positions are recorded like any other:
    mask them with the attention mask.
    """

    def __init__(self, pairs: list[tuple[str, Hookpoint, SAE]], keep_activations: bool):
        self._keys: dict[object, str] = {}
        for given, hp, sae in pairs:
            if hp.name in self._keys.values():
                raise ValueError(f"two SAEs at hookpoint {hp.name!r}: record them in two record() contexts")
            self._keys.update({given: hp.name, hp.name: hp.name, id(sae): hp.name})
        self.features: dict[str, list[SparseFeatures]] = {hp.name: [] for _, hp, _ in pairs}
        self.activations: dict[str, list[Tensor]] | None = (
            {hp.name: [] for _, hp, _ in pairs} if keep_activations else None
        )

    def name(self, key: object) -> str:
        found = self._keys.get(id(key) if isinstance(key, SAE) else key)
        if found is None:
            raise KeyError(f"{key!r} was not recorded; recorded hookpoints: {list(self.features)}")
        return found

    def __getitem__(self, key: object) -> SparseFeatures:
        return SparseFeatures.cat(self.features[self.name(key)])

    def activation(self, key: object) -> Tensor:
        """The captured activations of a hookpoint, concatenated along the token axis."""
        if self.activations is None:
            raise ValueError("activations were not kept: use record(..., keep_activations=True)")
        return torch.cat(self.activations[self.name(key)], dim=-2)


@reusable
def record(
    model: nn.Module, saes: SAEs, *, hookpoint: str | None = None, keep_activations: bool = False
) -> Iterator[Recording]:
    """Record the SAEs' features (sparse) during every forward inside the block; the model is unchanged."""
    pairs = attachments(model, saes, hookpoint)
    given = list(saes) if isinstance(saes, Mapping) else [hookpoint or sae.config.hookpoint for _, sae in pairs]
    rec = Recording([(g, hp, sae) for g, (hp, sae) in zip(given, pairs, strict=True)], keep_activations)

    def recorder(hp: Hookpoint, sae: SAE) -> HookFn:
        @torch.no_grad()
        def fn(x: Tensor) -> None:
            x = x.detach()
            rec.features[hp.name].append(encode(sae, _on_sae(x, sae, hp)).features)
            if rec.activations is not None:
                rec.activations[hp.name].append(x.clone())

        return fn

    with _hooked(model, [(hp, recorder(hp, sae)) for hp, sae in pairs], None):
        yield rec


# ---- splice ------------------------------------------------------------------------------------


@reusable
def splice(
    model: nn.Module,
    saes: SAEs,
    *,
    keep_error: bool = False,
    hookpoint: str | None = None,
    hookpoint_out: str | None = None,
    read: str = "replaced",
) -> Iterator[None]:
    """Replace each SAE's write point by its output (plus the error term y - y_hat if `keep_error`).

    An SAE writes where it reads; a transcoder writes at `hookpoint_out` (argument, else its config's)
    what it computes from its read point. `read="replaced"` (default) feeds each transcoder the read
    activation of the running forward, after upstream replacements; `read="clean"` the one of the
    forward without them (see the module docstring).
    """
    if read not in ("replaced", "clean"):
        raise ValueError(f'read={read!r} is not "replaced" or "clean"')
    pairs = [(hp, write_point(model, sae, hp, hookpoint_out), sae) for hp, sae in attachments(model, saes, hookpoint)]
    clean = CleanReads([hp for hp, _, _ in pairs]) if read == "clean" else None

    def splicer(hp: Hookpoint, write: Hookpoint, sae: SAE) -> ReadWriteFn:
        def fn(x: Tensor, y: Tensor) -> Tensor | None:
            y_hat = reconstruct(sae, encode(sae, _on_sae(x, sae, hp)))
            _check_width(y, sae, write, sae.config.resolved_d_out)
            out = y_hat + (y.to(y_hat.dtype) - y_hat) if keep_error else y_hat
            return out.to(device=y.device, dtype=y.dtype)

        return fn

    hooks = [h for hp, w, sae in pairs for h in read_write_hooks(hp, w, splicer(hp, w, sae), clean)]
    handles = []
    with hooks_removed(handles):
        if clean is not None:
            handles.append(clean.attach(model))
        with _hooked(model, hooks, None):
            yield


# ---- ablate / clamp ----------------------------------------------------------------------------


def _feature_ids(sae: SAE, features: Sequence[int] | Tensor) -> Tensor:
    """Validated feature indices: integers (not bools, floats or strings) in [0, d_sae)."""
    if isinstance(features, Tensor):
        if features.dtype == torch.bool or features.is_floating_point() or features.is_complex():
            raise TypeError(f"feature indices must be an integer tensor, got dtype {features.dtype}")
        ids = features.to(torch.long)
    else:
        items = [_scalar(f) for f in features]
        wrong = [f for f in items if isinstance(f, bool) or not isinstance(f, numbers.Integral)]
        if wrong:
            raise TypeError(f"feature indices must be integers, got {wrong!r}")
        ids = torch.tensor([int(f) for f in items], dtype=torch.long)
    ids = ids.reshape(-1).to(sae.W_dec.device)
    if ids.numel() == 0:
        raise ValueError("no features given")
    bad = ids[(ids < 0) | (ids >= sae.config.d_sae)]
    if bad.numel():
        raise ValueError(f"features {bad.tolist()} are out of range for an SAE with d_sae={sae.config.d_sae}")
    return ids


def _scalar(value):
    """A one-element tensor as its Python number (so `list(tensor)` works as a feature list)."""
    return value.item() if isinstance(value, Tensor) and value.numel() == 1 else value


def _finite_values(mapping: Mapping[int, float], what: str, like: Tensor) -> Tensor:
    """The mapping's values as a tensor; a NaN/Inf or non-number would turn every later logit NaN."""
    values = [_scalar(v) for v in mapping.values()]
    wrong = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Real)]
    if wrong:
        raise TypeError(f"{what} must be real numbers, got {wrong!r}")
    bad = {f: v for f, v in zip(mapping, values, strict=True) if not math.isfinite(v)}
    if bad:
        raise ValueError(f"{what} must be finite, got {bad}")
    return torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device)


def _edit_hooks(
    model: nn.Module, hp: Hookpoint, sae: SAE, hookpoint_out: str | None, tracker, positions: str, delta_fn
) -> list[tuple[Hookpoint, HookFn]]:
    """Hooks adding `delta_fn(code of x)` (model units) to the selected tokens of the write point's y."""
    write = write_point(model, sae, hp, hookpoint_out)

    def fn(x: Tensor, y: Tensor) -> Tensor | None:
        sel = tracker.selection(positions, y.shape[-2]) if tracker is not None else slice(None)
        x_sel, y_sel = x[..., sel, :], y[..., sel, :]
        if y_sel.shape[-2] == 0:
            return None
        _check_width(y, sae, write, sae.config.resolved_d_out)
        delta = delta_fn(encode(sae, _on_sae(x_sel, sae, hp))).to(device=y.device, dtype=y.dtype)
        if y_sel.shape[-2] == y.shape[-2]:
            return y + delta
        out = y.clone()
        out[..., sel, :] = y_sel + delta
        return out

    return read_write_hooks(hp, write, fn)


def _tracker(positions: str) -> PositionTracker | None:
    check_positions(positions)
    return None if positions == "all" else PositionTracker()


@reusable
def ablate(
    model: nn.Module,
    sae: SAE,
    features: Sequence[int] | Tensor,
    *,
    hookpoint: str | None = None,
    hookpoint_out: str | None = None,
    positions: str = "all",
) -> Iterator[None]:
    """Remove the features' contribution f_i * d_i from the activation written (a transcoder's
    write point); the error term is kept."""
    [(hp, sae)] = attachments(model, sae, hookpoint)
    ids = _feature_ids(sae, features)
    tracker = _tracker(positions)

    def delta(code) -> Tensor:
        f = code.features
        removed = decode_linear(sae, f.indices, f.values * torch.isin(f.indices, ids))
        return -to_model_units(sae, removed, code.stats)

    with _hooked(model, _edit_hooks(model, hp, sae, hookpoint_out, tracker, positions, delta), tracker):
        yield


@reusable
def clamp(
    model: nn.Module,
    sae: SAE,
    values: Mapping[int, float],
    *,
    hookpoint: str | None = None,
    hookpoint_out: str | None = None,
    positions: str = "all",
) -> Iterator[None]:
    """Pin features to values ({feature: value}, in the SAE's feature units) in the activation written
    (a transcoder's write point); the error term is kept."""
    [(hp, sae)] = attachments(model, sae, hookpoint)
    ids = _feature_ids(sae, list(values))
    targets = _finite_values(values, "clamp values", sae.W_dec)
    tracker = _tracker(positions)

    def delta(code) -> Tensor:
        f = code.features
        current = decode_linear(sae, f.indices, f.values * torch.isin(f.indices, ids))
        pinned = targets @ sae.W_dec[ids]  # (d_out,): the same for every token
        return to_model_units(sae, pinned - current, code.stats)

    with _hooked(model, _edit_hooks(model, hp, sae, hookpoint_out, tracker, positions, delta), tracker):
        yield


# ---- steer -------------------------------------------------------------------------------------


@reusable
def steer(
    model: nn.Module,
    sae: SAE,
    coefficients: Mapping[int, float],
    *,
    hookpoint: str | None = None,
    hookpoint_out: str | None = None,
    positions: str = "all",
    relative: bool = False,
) -> Iterator[None]:
    """Add sum_i c_i * u_i ({feature: c_i}) to the activation written (a transcoder's write point);
    u_i is decoder row i at unit norm.

    With `relative=True`, c_i is a fraction of each token's activation norm (c_i * ||x|| * u_i).
    The SAE itself is not run: the vector is built once on entry.
    """
    [(read, sae)] = attachments(model, sae, hookpoint)
    hp = write_point(model, sae, read, hookpoint_out)
    ids = _feature_ids(sae, list(coefficients))
    coefs = _finite_values(coefficients, "steering coefficients", sae.W_dec)
    with torch.no_grad():
        vector = coefs @ unit_directions(sae, ids)  # (d_out,)
    tracker = _tracker(positions)
    cache: dict[tuple, Tensor] = {}

    def fn(x: Tensor) -> Tensor | None:
        sel = tracker.selection(positions, x.shape[-2]) if tracker is not None else slice(None)
        x_sel = x[..., sel, :]
        if x_sel.shape[-2] == 0:
            return None
        key = (x.device, x.dtype)
        if key not in cache:  # one copy per device/dtype, not one transfer per token
            _check_width(x, sae, hp, sae.config.resolved_d_out)
            cache[key] = vector.to(device=x.device, dtype=x.dtype)
        add = cache[key] * x_sel.norm(dim=-1, keepdim=True) if relative else cache[key]
        if x_sel.shape[-2] == x.shape[-2]:
            return x + add
        out = x.clone()
        out[..., sel, :] = x_sel + add
        return out

    with _hooked(model, [(hp, fn)], tracker):
        yield
