"""The static feature browser: per-feature JSON (Neuronpedia's export field names) and one HTML file.

Field names follow Neuronpedia's feature export where one exists (`feature_index`,
`frac_nonzero`, `freq_hist_data_bar_*`, `logits_hist_data_bar_*`, `pos_str`/`pos_values`,
`neg_str`/`neg_values`, `activations: [{tokens, values, maxValue, maxValueTokenIndex}]`), so the
JSON stays readable by their tools; ours add `mean_act`, `max_act`, `max_cos`, `max_cos_neighbor`.
Autointerp adds Neuronpedia's `explanations` records per latent and a top-level `autointerp` summary
(`add_explanations`).
"""

import functools
import importlib.resources
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..files import atomic_write_text
from .examples import PAD_TOKEN, ActivationHistogram, TopActivations
from .metrics import ReconstructionMetrics, density_histogram
from .stats import LogitEffects

logger = logging.getLogger(__name__)


def _r(x: float) -> float:
    """4 significant digits: the page shows no more, and the file stays small."""
    return float(f"{x:.4g}")


def _rl(values) -> list[float]:
    return [_r(float(v)) for v in values]


def token_strings(ids: set[int], decode: Callable[[list[int]], str]) -> dict[int, str]:
    """Each token id decoded alone, once (a tokenizer's `decode`)."""
    return {i: decode([i]) for i in sorted(ids)}


def _examples_json(collector: TopActivations, f: int, strings: dict[int, str]) -> list[dict]:
    out = []
    for ex in collector.examples(f):
        values = _rl(ex["acts"])
        out.append(
            {
                "tokens": [strings[t] for t in ex["tokens"]],
                "values": values,
                "maxValue": _r(ex["value"]),
                "maxValueTokenIndex": max(range(len(values)), key=values.__getitem__),
            }
        )
    return out


def build_browser_data(
    *,
    metrics: ReconstructionMetrics,
    top: TopActivations,
    hist: ActivationHistogram,
    effects: LogitEffects,
    nearest: tuple[torch.Tensor, torch.Tensor],
    decode: Callable[[list[int]], str],
    title: str = "hubsae feature browser",
    meta: dict | None = None,
    samples: TopActivations | None = None,
) -> dict:
    """Everything the page shows, as plain JSON-able data; one entry per latent in `features`.

    `samples` (a `TopActivations(sample=True)`) adds `random_activations` to each feature.
    """
    used = set(top.tokens[top.tokens != PAD_TOKEN].tolist())
    if samples is not None:
        used |= set(samples.tokens[samples.tokens != PAD_TOKEN].tolist())
    used |= set(effects.pos_ids.flatten().tolist()) | set(effects.neg_ids.flatten().tolist())
    strings = token_strings(used, decode)
    # read per latent below: one transfer each instead of one per latent
    density, mean_act, act_max = metrics.density().cpu(), metrics.mean_activation().cpu(), metrics.act_max.cpu()
    nearest = (nearest[0].cpu(), nearest[1].cpu())
    features = []
    for f in range(metrics.d_sae):
        acts = _examples_json(top, f, strings)
        edges = hist.edges(f)
        features.append(
            {
                "feature_index": f,
                "frac_nonzero": float(density[f]),
                "mean_act": _r(float(mean_act[f])),
                "max_act": _r(float(act_max[f])),
                "max_cos": _r(float(nearest[0][f])),
                "max_cos_neighbor": int(nearest[1][f]),
                "freq_hist_data_bar_heights": hist.counts[f].tolist(),
                "freq_hist_data_bar_values": _rl((a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)),
                "freq_hist_data_bar_edges": _rl(edges),
                "logits_hist_data_bar_heights": effects.hist_counts[f].tolist(),
                "logits_hist_data_bar_values": _rl((effects.hist_edges[f, :-1] + effects.hist_edges[f, 1:]) / 2),
                "pos_str": [strings[t] for t in effects.pos_ids[f].tolist()],
                "pos_values": _rl(effects.pos_values[f]),
                "neg_str": [strings[t] for t in effects.neg_ids[f].tolist()],
                "neg_values": _rl(effects.neg_values[f]),
                "activations": acts,
            }
        )
        if samples is not None:
            features[-1]["random_activations"] = _examples_json(samples, f, strings)
    alive = (metrics.fire_count > 0).nonzero().cpu()
    return {
        "title": title,
        "meta": dict(meta or {}),
        "n_tokens": metrics.n_tokens,
        "density_hist": density_histogram(density),
        "first_feature": int(alive[0]) if len(alive) else 0,
        "features": features,
    }


def add_explanations(data: dict, explanations: Mapping[int, list[dict]], summary: dict | None = None) -> dict:
    """Put `explanations` ({latent: Neuronpedia explanation records}, e.g. `AutointerpResult.
    neuronpedia_explanations()`) into each feature of `build_browser_data`'s output (latents without one
    get `[]`) and `summary` under `autointerp`; returns `data`, changed in place."""
    n = len(data["features"])
    bad = [k for k in explanations if not 0 <= int(k) < n]
    if bad:
        raise ValueError(f"explanations for latents {bad[:5]} outside the browser's 0..{n - 1}")
    for f in data["features"]:
        f["explanations"] = list(explanations.get(f["feature_index"], []))
    if summary is not None:
        data["autointerp"] = dict(summary)
    return data


def script_json(data) -> str:
    """JSON that is inert inside a <script> element: every `<`, `>` and `&` written as a \\u escape.

    The HTML parser ends a script at `</script` and, after `<!--`, treats a later `<script` as
    opening a nested one (which then swallows the page's own script). JSON.parse reads the
    escapes back as the same characters, so the data is unchanged.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def html_text(text: str) -> str:
    """`text` safe as the content of an HTML element (e.g. <title>)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@functools.cache
def page_template(name: str = "browser.html") -> str:
    """A page of templates/ (package data): one HTML file with inline CSS, JS and SVG (no server, no
    CDN). The browser's `__DATA__` becomes the JSON of `build_browser_data` (`<`, `>`, `&` as \\u
    escapes, see `script_json`); it reads `#feature=N` from the URL and sets `body[data-status]` to
    "ok" once a feature is drawn, "error" on any script error."""
    return (importlib.resources.files(__package__) / "templates" / name).read_text(encoding="utf-8")


def render_html(data: dict) -> str:
    """The self-contained page for `build_browser_data`'s output."""
    # one pass, so a title holding "__DATA__" (or data holding "__TITLE__") is not substituted again
    values = {"__TITLE__": html_text(str(data.get("title", ""))), "__DATA__": script_json(data)}
    return re.sub("__TITLE__|__DATA__", lambda m: values[m.group(0)], page_template("browser.html"))


def write_browser_files(data: dict, out_dir: str | os.PathLike) -> Path:
    """Write `index.html` (the browser) and `features.json` (the same data) into `out_dir`."""
    out = Path(out_dir)
    atomic_write_text(out / "features.json", json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    page = atomic_write_text(out / "index.html", render_html(data))
    logger.info("wrote the feature browser for %d latents to %s", len(data["features"]), page)
    return page
