"""What `attribute` returns: sparse nodes per SAE, sortable, with token strings; JSON; the ablation check.

The ablation check runs the real thing for the top features: each feature is removed at its one
position (f_i d_i subtracted, every other feature and the error kept) and the metric's actual change
is set beside the attribution's prediction (-attribution), with their Pearson correlation.
"""

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ..hooks.attach import add_hook, hooks_removed
from ..hooks.features import to_model_units
from ..hooks.hookpoints import Hookpoint
from ..saes.base import SAE

_LAYER = re.compile(r"\.(\d+)(?:[.:]|$)")


@dataclass
class SiteResult:
    """One SAE's nodes: active features (indices/values/attribution, each (B, T, k)) and the error (B, T).

    Slots whose value is 0 are inactive. `atp`/`atp_error` hold the AtP estimate when the main
    attribution came from integrated gradients.
    """

    hookpoint: str  # where the SAE reads
    writes: str  # where its reconstruction is: `hookpoint`, or a transcoder's hookpoint_out
    order: int  # position of the write in the forward
    indices: Tensor
    values: Tensor
    attribution: Tensor
    error_attribution: Tensor
    error_norm: Tensor
    atp: Tensor | None = None
    atp_error: Tensor | None = None

    @property
    def layer(self) -> int:
        """The decoder layer in the hookpoint's name (`model.layers.6.mlp` -> 6), else the forward order."""
        found = _LAYER.search(self.hookpoint)
        return int(found.group(1)) if found else self.order


@dataclass
class Node:
    """A feature (or, with `feature=None`, the SAE's error term) at one token."""

    hookpoint: str
    layer: int
    batch: int
    position: int
    token: str
    feature: int | None
    activation: float  # the feature's value; for the error term, its norm
    attribution: float


@dataclass
class Edge:
    source: str  # node ids (`node_id`)
    target: str
    weight: float


def node_id(node: Node) -> str:
    kind = "error" if node.feature is None else str(node.feature)
    return f"{node.hookpoint}/{node.batch}/{node.position}/{kind}"


@dataclass
class Validation:
    """Predicted (-attribution) against actual metric change when each node is ablated."""

    nodes: list[str]
    predicted: list[float]
    actual: list[float]
    pearson: float | None  # None with fewer than 2 points or no spread

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Attribution:
    """The result of `attribute`: the clean metric, every node per SAE, edges, the ablation check."""

    metric: float
    method: str
    steps: int
    input_ids: Tensor  # (B, T)
    mask: Tensor  # (B, T) bool: real tokens (not padding)
    sites: list[SiteResult]
    tokenizer: object = None
    metric_name: str = "metric"
    linear: bool = False  # the backward froze attention patterns and norm scales (`attribute(linear=True)`)
    edges: list[Edge] = field(default_factory=list)
    validation: Validation | None = None

    def __post_init__(self) -> None:
        decode = getattr(self.tokenizer, "decode", None)
        ids = self.input_ids.tolist()
        self.tokens = [[decode([i]) if decode else str(i) for i in row] for row in ids]

    def site(self, hookpoint: str) -> SiteResult:
        for s in self.sites:
            if s.hookpoint == hookpoint:
                return s
        raise KeyError(f"no SAE at {hookpoint!r}; attributed hookpoints: {[s.hookpoint for s in self.sites]}")

    def nodes(self, errors: bool = True) -> list[Node]:
        """Every active node at a real token, largest |attribution| first."""
        out = []
        for s in self.sites:
            active = (s.values != 0) & self.mask.unsqueeze(-1)
            for b, t, k in active.nonzero().tolist():
                out.append(
                    self._node(s, b, t, int(s.indices[b, t, k]), float(s.values[b, t, k]), s.attribution[b, t, k])
                )
            if errors:
                for b, t in self.mask.nonzero().tolist():
                    out.append(self._node(s, b, t, None, float(s.error_norm[b, t]), s.error_attribution[b, t]))
        return sorted(out, key=lambda n: -abs(n.attribution))

    def _node(self, s: SiteResult, b: int, t: int, feature: int | None, act: float, attr: Tensor) -> Node:
        return Node(s.hookpoint, s.layer, b, t, self.tokens[b][t], feature, act, float(attr))

    def top(self, k: int = 20, errors: bool = True) -> list[Node]:
        """The `k` nodes with the largest |attribution| (with `errors=False`, features only)."""
        return self.nodes(errors)[:k]

    def per_token(self, k: int = 5, errors: bool = False) -> dict[tuple[int, int], list[Node]]:
        """(batch, position) -> that token's top `k` nodes over all SAEs."""
        out: dict[tuple[int, int], list[Node]] = {}
        for n in self.nodes(errors):
            row = out.setdefault((n.batch, n.position), [])
            if len(row) < k:
                row.append(n)
        return out

    def total(self, hookpoint: str) -> float:
        """Sum of the attributions of a hookpoint's features and error term (real tokens only)."""
        s = self.site(hookpoint)
        feats = (s.attribution * self.mask.unsqueeze(-1)).sum()
        return float(feats + (s.error_attribution * self.mask).sum())

    def to_json(self, top: int | None = None) -> dict:
        """Plain JSON data: the run, every node (or the `top` largest), edges, the ablation check."""
        nodes = self.nodes() if top is None else self.top(top)
        return {
            "metric": self.metric_name,
            "value": _r(self.metric),
            "method": self.method,
            "steps": self.steps,
            "linear": self.linear,
            "tokens": self.tokens,
            "hookpoints": [
                {"name": s.hookpoint, "writes": s.writes, "layer": s.layer, "order": s.order} for s in self.sites
            ],
            "totals": {s.hookpoint: _r(self.total(s.hookpoint)) for s in self.sites},
            "nodes": [_node_json(n) for n in nodes],
            "edges": [{"source": e.source, "target": e.target, "weight": _r(e.weight)} for e in self.edges],
            "validation": None if self.validation is None else self.validation.to_json(),
        }


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def _node_json(n: Node) -> dict:
    data = asdict(n)
    data.update(id=node_id(n), activation=_r(n.activation), attribution=_r(n.attribution))
    return data


# ---- the ablation check ------------------------------------------------------------------------


def _removal_hooks(sae: SAE, node: Node, reads: Hookpoint, writes: Hookpoint) -> list:
    """Hooks removing f_i d_i (the node's feature, in the model's units) at the node's token.

    The units come from the SAE's input (`input_norm="token"` scales by the input token's norm), so
    a transcoder gets a read hook too.
    """
    b, t = node.batch, node.position
    seen: dict = {}

    def read(x: Tensor) -> None:
        x_tok = x[b, t].to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
        seen["stats"] = sae.normalize_input(x_tok)[1] if sae.config.input_norm == "token" else None

    def write(y: Tensor) -> Tensor:
        if reads is writes:
            read(y)
        delta = to_model_units(sae, node.activation * sae.W_dec[node.feature], seen["stats"])
        out = y.clone()
        out[b, t] = y[b, t] - delta.to(device=y.device, dtype=y.dtype)
        return out

    return [(writes, write)] if reads is writes else [(reads, read), (writes, write)]


@torch.no_grad()
def _metric_with(model: nn.Module, inputs: dict, metric, hooks: list) -> float:
    handles = []
    with hooks_removed(handles):
        for hp, fn in hooks:
            handles.append(add_hook(hp, fn))
        return float(metric(model(**inputs).logits))


def pearson(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2:
        return None
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 and math.isfinite(denom) else None


def ablation_check(
    model: nn.Module,
    targets: Mapping[str, tuple[SAE, Hookpoint, Hookpoint]],
    inputs: dict,
    metric,
    result: Attribution,
    n: int,
) -> Validation:
    """Ablate each of the top `n` features alone and compare the metric's change with -attribution.

    `targets`: hookpoint name -> (the SAE reading there, that hookpoint, the hookpoint it writes).
    """
    clean = _metric_with(model, inputs, metric, [])
    nodes = result.top(n, errors=False)
    actual = []
    for node in nodes:
        hooks = _removal_hooks(*targets[node.hookpoint][:1], node, *targets[node.hookpoint][1:])
        actual.append(_metric_with(model, inputs, metric, hooks) - clean)
    predicted = [-n.attribution for n in nodes]
    return Validation([node_id(n) for n in nodes], predicted, actual, pearson(predicted, actual))


def plot_validation(validation: Validation, path):
    """Scatter of predicted against actual metric change, with the y = x line and r in the title."""
    from ..plots import figure, save_png

    fig = figure(4.5, 4)
    ax = fig.add_subplot()
    ax.scatter(validation.predicted, validation.actual, s=18, color="#4c6ef5")
    ends = [*validation.predicted, *validation.actual, 0.0]
    lo, hi = min(ends), max(ends)
    ax.plot([lo, hi], [lo, hi], color="#999", lw=1, ls="--", label="y = x")
    ax.axhline(0, color="#ddd", lw=0.8)
    ax.axvline(0, color="#ddd", lw=0.8)
    r = "n/a" if validation.pearson is None else f"{validation.pearson:.3f}"
    ax.set_title(f"ablating top features: Pearson r = {r}", fontsize=10)
    ax.set_xlabel("predicted change (-attribution)")
    ax.set_ylabel("actual change of the metric")
    ax.legend(fontsize=8)
    return save_png(fig, path)
