"""Which features made the model say that: attribution of a scalar metric to SAE features and errors.

At a hookpoint with an SAE, the activation splits into nodes: x = base + sum_i f_i d_i + e, with f_i
the features, d_i the decoder rows in the model's units, base the decoder bias in the model's units
and e the SAE's error term. A node's attribution estimates m(clean) - m(node set to 0):
- "atp", attribution patching (Syed et al., arXiv 2310.10348; Marks et al., arXiv 2403.19647):
  f_i * dm/df_i on the clean run (for the error, e . dm/de), every node of every SAE from one
  forward and one backward. Gradients are total derivatives through the unchanged model: each hook
  returns its input's value exactly, so the downstream SAEs only read, never edit.
- "ig", integrated gradients (Sundararajan et al., arXiv 1703.01365) along the straight line from
  base to x, one hookpoint at a time: `steps` forwards and backwards per hookpoint; the nodes of a
  hookpoint sum to m(clean) - m(the attributed tokens' x replaced by base), up to the quadrature error.
Transcoders (`config.hookpoint_out`) read at their hookpoint and write at `hookpoint_out`: their
features come from the input, their nodes (features, error = actual output - reconstruction) sit
on the output.
Edges are AtP on the downstream feature's activation a_j: the weight from an upstream node n is
n's activation times d a_j / d n, through the model (Marks et al.'s edge effect multiplies this by
the metric's gradient at a_j; the node's own attribution gives that factor).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..hooks.attach import add_hook, hooks_removed
from ..hooks.features import decode_linear, encode, to_model_units
from ..hooks.hookpoints import Hookpoint, activation_width, resolve_hookpoint
from ..hooks.interventions import SAEs, attachments
from ..saes.base import SAE
from .attribution_linear import freeze_hooks
from .attribution_metrics import Metric, checked_metric, logit_diff, token_id, token_logprob
from .attribution_result import Attribution, Edge, SiteResult, ablation_check, node_id

__all__ = ["Attribution", "Edge", "attribute", "logit_diff", "token_logprob", "token_id", "METHODS"]

METHODS = ("atp", "ig")


# ---- the hooked forward ------------------------------------------------------------------------


@dataclass
class _Site:
    """One SAE's nodes on the clean run; `values` and `zero` are the leaves gradients are taken for.

    An SAE reads and writes at `hookpoint`; a transcoder reads there and writes at `writes`.
    """

    hookpoint: Hookpoint
    writes: Hookpoint
    sae: SAE
    read_at: int = -1  # index of the hook event that read the input (edges need upstream writes before it)
    order: int = -1  # index of the hook event that wrote the reconstruction
    indices: Tensor | None = None  # (B, T, k)
    values: Tensor | None = None  # (B, T, k), requires grad
    zero: Tensor | None = None  # (B, T, d), zeros, requires grad: d m / d zero = d m / d x
    error: Tensor | None = None  # (B, T, d), detached
    base: Tensor | None = None  # (B, T, d), the activation with every feature and the error at 0
    stats: object = None
    x: Tensor | None = None  # (B, T, d) the input in the graph (for edges)
    atp: tuple[Tensor, Tensor] | None = None  # (features (B, T, k), errors (B, T)) attributions
    cut: bool = False  # linear mode, transcoder: the output reaches the model only through the nodes


def _on_sae(x: Tensor, sae: SAE, hp: Hookpoint) -> Tensor:
    if x.shape[-1] != sae.config.d_in:
        raise ValueError(
            f"{type(sae).__name__} has d_in={sae.config.d_in} but the activation at hookpoint {hp.name!r} "
            f"has shape {tuple(x.shape)}"
        )
    return x.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)


def _read(site: _Site, x: Tensor, events: list) -> None:
    """Encode the input (no graph: the feature values become leaves) and keep x for the edges."""
    if site.indices is not None:
        raise RuntimeError(f"hookpoint {site.hookpoint.name!r} ran twice in one forward; attribute one forward")
    x_sae = _on_sae(x, site.sae, site.hookpoint)
    with torch.no_grad():
        code = encode(site.sae, x_sae)
    site.indices, site.stats = code.features.indices, code.stats
    site.values = code.features.values.detach().clone().requires_grad_(True)
    site.x, site.read_at = x_sae, len(events)
    events.append(site)


def _write(site: _Site, y: Tensor, events: list) -> Tensor:
    """y + (r(v) - r(v).detach()) + zero: y's value exactly, with gradients to the features and to y."""
    sae = site.sae
    if site.values is None:
        raise RuntimeError(f"{site.writes.name!r} ran before {site.hookpoint.name!r}, where its transcoder reads")
    if site.zero is not None:
        raise RuntimeError(f"hookpoint {site.writes.name!r} ran twice in one forward; attribute one forward")
    y_sae = _on_sae(y, sae, site.writes)
    linear = to_model_units(sae, decode_linear(sae, site.indices, site.values), site.stats)
    with torch.no_grad():
        site.base = sae.denormalize(sae.b_dec.expand_as(y_sae), site.stats)
        site.error = y_sae - site.base - linear
    site.zero = torch.zeros_like(y_sae, requires_grad=True)
    site.order = len(events)
    events.append(site)
    through = y_sae.detach() if site.cut else y_sae  # cut: the MLP's own path carries no gradient
    return (through + (linear - linear.detach()) + site.zero).to(device=y.device, dtype=y.dtype)


def _capture_hooks(site: _Site, events: list) -> list[tuple[Hookpoint, Callable]]:
    if site.writes is site.hookpoint:

        def read_write(x: Tensor) -> Tensor:
            _read(site, x, events)
            return _write(site, x, events)

        return [(site.hookpoint, read_write)]
    return [(site.hookpoint, lambda x: _read(site, x, events)), (site.writes, lambda y: _write(site, y, events))]


def _model_inputs(inputs) -> dict:
    if isinstance(inputs, Tensor):
        return {"input_ids": inputs if inputs.dim() == 2 else inputs.reshape(1, -1)}
    if isinstance(inputs, Mapping) and "input_ids" in inputs:
        return dict(inputs)
    raise TypeError("inputs must be a tokenizer's output (with input_ids) or a tensor of token ids")


def _forward(model: nn.Module, inputs: dict, metric: Metric, hooks: list, frozen: bool = False) -> Tensor:
    handles = []
    with hooks_removed(handles), torch.enable_grad():
        if frozen:
            handles += freeze_hooks(model)
        for hp, fn in hooks:
            handles.append(add_hook(hp, fn))
        logits = model(**inputs).logits
    return checked_metric(metric, logits)


def _run_atp(
    model: nn.Module, inputs: dict, metric: Metric, sites: list[_Site], keep_graph: bool, linear: bool
) -> float:
    """One forward, one backward: the AtP of every node of every site (stored on the sites)."""
    events: list[_Site] = []
    hooks = [hook for s in sites for hook in _capture_hooks(s, events)]
    value = _forward(model, inputs, metric, hooks, frozen=linear)
    missing = [s.hookpoint.name for s in sites if s.values is None] + [s.writes.name for s in sites if s.zero is None]
    if missing:
        raise RuntimeError(f"hookpoints {missing} did not run in the forward, so nothing there can be attributed")
    leaves = [t for s in sites for t in (s.values, s.zero)]
    grads = torch.autograd.grad(value, leaves, retain_graph=keep_graph, allow_unused=True)
    for s, gv, gz in zip(sites, grads[0::2], grads[1::2], strict=True):
        gv = torch.zeros_like(s.values) if gv is None else gv  # None: the metric does not depend on it
        gz = torch.zeros_like(s.zero) if gz is None else gz
        s.atp = (s.values.detach() * gv, (s.error * gz).sum(-1))
    return float(value.detach())


# ---- integrated gradients ----------------------------------------------------------------------


def _ig_hook(site: _Site, scale: Tensor, grads: dict):
    """Replace x by base + scale * (features + error), with leaves for the scaled features and error.

    `scale` (B, T, 1) is alpha at the attributed tokens and 1 elsewhere (padding, an ignored BOS),
    which keep their clean activations.
    """

    def fn(x: Tensor) -> Tensor:
        sae = site.sae
        u = (scale * site.values.detach()).requires_grad_(True)
        w = (scale * site.error).requires_grad_(True)
        grads["leaves"] = (u, w)
        out = site.base + to_model_units(sae, decode_linear(sae, site.indices, u), site.stats) + w
        return out.to(device=x.device, dtype=x.dtype)

    return fn


def _run_ig(
    model: nn.Module, inputs: dict, metric: Metric, site: _Site, steps: int, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Midpoint-rule integrated gradients of every node of one SAE (the other hookpoints run clean).

    Along the path only the tokens in `mask` move, so their nodes sum to m(clean) - m(those tokens at base).
    """
    sum_v, sum_e = torch.zeros_like(site.values), torch.zeros_like(site.error)
    moving = mask.to(site.values.device).unsqueeze(-1)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        scale = torch.where(moving, alpha, 1.0).to(site.values.dtype)
        grads: dict = {}
        value = _forward(model, inputs, metric, [(site.writes, _ig_hook(site, scale, grads))])
        gv, ge = torch.autograd.grad(value, grads["leaves"], allow_unused=True)
        sum_v += gv if gv is not None else 0.0
        sum_e += ge if ge is not None else 0.0
    return site.values.detach() * sum_v / steps, (site.error * sum_e / steps).sum(-1)


# ---- edges -------------------------------------------------------------------------------------


def _edges(result: Attribution, sites: list[_Site], n_nodes: int) -> list[Edge]:
    """AtP edges between the top `n_nodes` nodes: upstream node -> downstream feature activation."""
    chosen = result.top(n_nodes)
    by_name = {s.hookpoint.name: s for s in sites}
    edges = []
    for target in chosen:
        if target.feature is None:
            continue  # an error node has no scalar activation to differentiate
        down = by_name[target.hookpoint]
        sources = [n for n in chosen if by_name[n.hookpoint].order < down.read_at]  # written before it is read
        if not sources:
            continue
        x_tok = down.x[target.batch, target.position]
        activation = down.sae.encode(x_tok)[target.feature]
        up_names = {n.hookpoint for n in sources}
        up_sites = [s for s in sites if s.hookpoint.name in up_names]
        grads = torch.autograd.grad(
            activation, [t for s in up_sites for t in (s.values, s.zero)], retain_graph=True, allow_unused=True
        )
        grad_of = {s.hookpoint.name: grads[2 * i : 2 * i + 2] for i, s in enumerate(up_sites)}
        for n in sources:
            weight = _edge_weight(by_name[n.hookpoint], n, *grad_of[n.hookpoint])
            if weight != 0.0:
                edges.append(Edge(node_id(n), node_id(target), weight))
    return edges


def _edge_weight(site: _Site, node, g_values: Tensor | None, g_zero: Tensor | None) -> float:
    b, t = node.batch, node.position
    if node.feature is None:
        return 0.0 if g_zero is None else float((site.error[b, t] * g_zero[b, t]).sum())
    if g_values is None:
        return 0.0
    slot = (site.indices[b, t] == node.feature) & (site.values[b, t] != 0)
    return float((site.values.detach()[b, t] * g_values[b, t])[slot].sum())


# ---- the public call ---------------------------------------------------------------------------


def attribute(
    model: nn.Module,
    saes: SAEs,
    inputs,
    metric: Metric,
    *,
    method: str = "atp",
    steps: int = 16,
    tokenizer=None,
    edge_nodes: int = 20,
    validate: int = 0,
    ignore_first: int = 0,
    linear: bool = False,
) -> Attribution:
    """Attribution of `metric(logits)` to every active feature and error term of every SAE in `saes`.

    `saes`: one SAE, a list (each at its `config.hookpoint`) or {hookpoint: SAE}. `inputs`: the
    tokenizer's output (or token ids). `metric`: logits (B, T, V) -> scalar, e.g. `token_logprob`.
    `edge_nodes`: AtP edges among this many top nodes (0: none). `validate`: ablate this many top
    features one at a time and store predicted vs actual metric changes (`result.validation`).
    `ignore_first`: leave the first n real tokens of each row out of the nodes (a BOS attention
    sink, whose huge activations dominate every ranking); the model still runs on them.
    `linear=True` (AtP only): the backward sees attention patterns and norm scales frozen and each
    transcoder's output only through its nodes, the local replacement model of circuit-tracer
    (Ameisen et al. 2025): with transcoders at every MLP, every edge and attribution is exact.
    Hooks are removed on every exit path.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if method == "ig" and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if linear and method != "atp":
        raise ValueError("linear=True makes the graph linear, where AtP is exact: use method='atp'")
    if not isinstance(ignore_first, int) or ignore_first < 0:
        raise ValueError(f"ignore_first must be a non-negative integer, got {ignore_first!r}")
    sites = _sites(model, saes, linear)
    batch = _model_inputs(inputs)
    value = _run_atp(model, batch, metric, sites, keep_graph=edge_nodes > 0, linear=linear)
    sites.sort(key=lambda s: s.order)
    mask = _mask(batch, ignore_first)
    ig = {s.hookpoint.name: _run_ig(model, batch, metric, s, steps, mask) for s in sites} if method == "ig" else {}
    result = Attribution(
        metric=value,
        method=method,
        steps=steps if method == "ig" else 1,
        input_ids=batch["input_ids"].detach().cpu(),
        mask=mask,
        sites=[_site_result(s, ig.get(s.hookpoint.name)) for s in sites],
        tokenizer=tokenizer,
        metric_name=getattr(metric, "__name__", type(metric).__name__),
        linear=linear,
    )
    if edge_nodes > 0:
        with torch.enable_grad():
            result.edges = _edges(result, sites, edge_nodes)
    if validate > 0:
        targets = {s.hookpoint.name: (s.sae, s.hookpoint, s.writes) for s in sites}
        result.validation = ablation_check(model, targets, batch, metric, result, validate)
    return result


def _sites(model: nn.Module, saes: SAEs, linear: bool) -> list[_Site]:
    """One site per SAE, every hookpoint resolved and width-checked before any forward."""
    sites = []
    for hp, sae in attachments(model, saes):
        writes = hp
        if sae.config.hookpoint_out is not None:  # a transcoder: its reconstruction replaces another activation
            writes = resolve_hookpoint(model, sae.config.hookpoint_out)
            width = activation_width(model, writes)
            if width is not None and width != sae.config.d_in:
                raise ValueError(
                    f"{type(sae).__name__} writes d_in={sae.config.d_in} values at {writes.name!r}, "
                    f"whose activation has width {width}"
                )
        sites.append(_Site(hp, writes, sae, cut=linear and writes is not hp))
    names = [s.hookpoint.name for s in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"two SAEs read at one hookpoint ({names}): attribute them in two calls")
    return sites


def _mask(batch: dict, ignore_first: int) -> Tensor:
    """(B, T) bool: real tokens (not padding), from the `ignore_first`-th real token of each row on."""
    mask = batch.get("attention_mask")
    real = (mask if mask is not None else torch.ones_like(batch["input_ids"])).detach().cpu().bool()
    return real & (real.cumsum(-1) > ignore_first)


def _site_result(site: _Site, ig: tuple[Tensor, Tensor] | None) -> SiteResult:
    atp_v, atp_e = site.atp
    attr_v, attr_e = ig if ig is not None else (atp_v, atp_e)
    return SiteResult(
        hookpoint=site.hookpoint.name,
        writes=site.writes.name,
        order=site.order,
        indices=site.indices.detach().cpu(),
        values=site.values.detach().float().cpu(),
        attribution=attr_v.detach().float().cpu(),
        error_attribution=attr_e.detach().float().cpu(),
        error_norm=site.error.norm(dim=-1).float().cpu(),
        atp=atp_v.detach().float().cpu() if ig is not None else None,
        atp_error=atp_e.detach().float().cpu() if ig is not None else None,
    )
