"""Write an attribution to disk: attribution.json, a self-contained attribution.html, validation.png.

The page draws the graph of the top nodes (one column per token, one row per hookpoint, the metric
on top; edges coloured by sign, width by weight), the top nodes per token (click a token), the
overall top nodes and the ablation check. Feature ids link into the feature browser when
`browser={hookpoint: url of its index.html}` is given (`url#feature=N`, which the browser opens).
`body[data-status]` becomes "ok" once drawn and "error" on any script error, as in the browser.
"""

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from ..files import atomic_write_text
from ..plots import have_matplotlib
from .attribution_result import Attribution, node_id, plot_validation
from .browser import html_text, page_template, script_json

logger = logging.getLogger(__name__)


def attribution_data(
    result: Attribution, *, graph_nodes: int = 20, browser: Mapping[str, str] | None = None, title: str | None = None
) -> dict:
    """The JSON the page reads: `result.to_json()` plus the graph's node ids, links and a title."""
    data = result.to_json()
    data["graph"] = [node_id(n) for n in result.top(graph_nodes)]
    data["browser"] = dict(browser or {})
    data["title"] = title or f"attribution of {result.metric_name}"
    return data


def render_attribution_html(data: dict) -> str:
    # one pass, so a title holding "__DATA__" is not substituted again
    values = {"__TITLE__": html_text(str(data.get("title", ""))), "__DATA__": script_json(data)}
    return re.sub("__TITLE__|__DATA__", lambda m: values[m.group(0)], page_template("attribution.html"))


def write_attribution(
    result: Attribution,
    out_dir: str | os.PathLike,
    *,
    graph_nodes: int = 20,
    browser: Mapping[str, str] | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """attribution.json and attribution.html (and validation.png with matplotlib and a validation)."""
    out = Path(out_dir)
    data = attribution_data(result, graph_nodes=graph_nodes, browser=browser, title=title)
    paths = {}
    if result.validation is not None and have_matplotlib():
        paths["png"] = plot_validation(result.validation, out / "validation.png")
        data["validation_png"] = "validation.png"
    paths["json"] = atomic_write_text(out / "attribution.json", json.dumps(data, ensure_ascii=False, indent=1))
    paths["html"] = atomic_write_text(out / "attribution.html", render_attribution_html(data))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
