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
from .browser import html_text, script_json

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
    return re.sub("__TITLE__|__DATA__", lambda m: values[m.group(0)], PAGE)


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


PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<script>
window.addEventListener("error", function (e) {
  document.body.dataset.status = "error";
  document.getElementById("errors").textContent += (e.message || String(e)) + "\n";
});
</script>
<style>
body { font-family: system-ui, sans-serif; margin: 0; color: #1d2430; background: #f6f7f9; }
header { background: #1d2430; color: #fff; padding: 10px 18px; }
header h1 { font-size: 17px; margin: 0 0 4px; } header div { font-size: 13px; color: #c8cdd6; }
main { padding: 10px 18px; display: grid; gap: 12px; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px 14px; overflow-x: auto; }
h2 { font-size: 15px; margin: 4px 0 8px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eef0f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tok { font-family: ui-monospace, monospace; padding: 2px 3px; margin: 1px; border: 1px solid #dde1e7; border-radius: 3px; cursor: pointer; display: inline-block; white-space: pre; }
.tok.sel { outline: 2px solid #e8590c; }
.pos { color: #126b2f; } .neg { color: #a3221b; }
#errors { color: #a3221b; white-space: pre; }
svg text { font-size: 10px; fill: #445; }
</style>
</head>
<body data-status="loading">
<header><h1 id="title"></h1><div id="summary"></div></header>
<pre id="errors"></pre>
<main>
  <section><h2>Prompt (click a token)</h2><div id="prompt"></div></section>
  <section><h2>Graph of the top nodes</h2><svg id="graph"></svg></section>
  <section><h2 id="toktitle"></h2><table id="pertoken"></table></section>
  <section><h2>Top nodes</h2><table id="top"></table></section>
  <section id="valsec"><h2>Ablation check</h2><div id="valsummary"></div><table id="validation"></table><div id="valimg"></div></section>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const fmt = (x) => (x === null || x === undefined) ? "n/a" : (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.001)) ? x.toExponential(2) : (+x.toFixed(4)).toString();
const byId = new Map(DATA.nodes.map((n) => [n.id, n]));
const layerOf = new Map(DATA.hookpoints.map((h, i) => [h.name, i]));

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function featureCell(n) {
  if (n.feature === null) return el("td", {}, "error term");
  const url = DATA.browser[n.hookpoint], td = el("td");
  if (url) td.append(el("a", {href: url + "#feature=" + n.feature, target: "_blank"}, "feature " + n.feature));
  else td.textContent = "feature " + n.feature;
  return td;
}
function nodeTable(table, nodes) {
  table.replaceChildren();
  const head = el("tr");
  for (const h of ["hookpoint", "token", "pos", "node", "activation", "attribution"]) head.append(el("th", {}, h));
  table.append(head);
  for (const n of nodes) {
    const tr = el("tr");
    tr.append(el("td", {}, n.hookpoint), el("td", {}, JSON.stringify(n.token)), el("td", {class: "num"}, String(n.position)),
      featureCell(n), el("td", {class: "num"}, fmt(n.activation)),
      el("td", {class: "num " + (n.attribution >= 0 ? "pos" : "neg")}, fmt(n.attribution)));
    table.append(tr);
  }
}
function drawGraph() {
  const svg = $("graph"), ids = DATA.graph.filter((i) => byId.has(i)), nodes = ids.map((i) => byId.get(i));
  const cols = [...new Set(nodes.map((n) => n.batch + ":" + n.position))].sort((a, b) => {
    const [ab, ap] = a.split(":").map(Number), [bb, bp] = b.split(":").map(Number); return ab - bb || ap - bp; });
  const rows = DATA.hookpoints.length, colW = 90, rowH = 70, W = 80 + colW * Math.max(cols.length, 1), H = 40 + rowH * (rows + 1);
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.replaceChildren();
  const maxA = Math.max(1e-12, ...nodes.map((n) => Math.abs(n.attribution)));
  const maxE = Math.max(1e-12, ...DATA.edges.map((e) => Math.abs(e.weight)));
  const place = new Map(), slots = new Map();
  for (const n of nodes) {
    const c = cols.indexOf(n.batch + ":" + n.position), r = layerOf.get(n.hookpoint), key = c + "," + r, k = slots.get(key) || 0;
    slots.set(key, k + 1);
    place.set(n.id, [80 + c * colW + 14 + (k % 4) * 18, H - 30 - rowH * r - Math.floor(k / 4) * 18]);
  }
  DATA.hookpoints.forEach((h, r) => svg.append(el("svg:text", {x: 4, y: H - 26 - rowH * r}, h.name)));
  svg.append(el("svg:text", {x: 4, y: 24}, "metric"));
  cols.forEach((c, i) => { const [b, p] = c.split(":").map(Number);
    svg.append(el("svg:text", {x: 80 + i * colW, y: H - 6}, JSON.stringify(DATA.tokens[b][p]) + " @" + p)); });
  const metric = [80 + colW * Math.max(cols.length, 1) / 2, 20];
  svg.append(el("svg:circle", {cx: metric[0], cy: metric[1], r: 8, fill: "#1d2430"}));
  const line = (a, b, w, max, extra) => svg.append(el("svg:line", Object.assign({x1: a[0], y1: a[1], x2: b[0], y2: b[1],
    stroke: w >= 0 ? "#2f9e44" : "#e03131", "stroke-width": 0.5 + 3.5 * Math.abs(w) / max, "stroke-opacity": 0.6}, extra || {})));
  for (const n of nodes) line(place.get(n.id), metric, n.attribution, maxA, {"stroke-dasharray": "3,3"});
  for (const e of DATA.edges) if (place.has(e.source) && place.has(e.target)) line(place.get(e.source), place.get(e.target), e.weight, maxE);
  for (const n of nodes) {
    const [x, y] = place.get(n.id), c = el("svg:circle", {cx: x, cy: y, r: 3 + 6 * Math.sqrt(Math.abs(n.attribution) / maxA),
      fill: n.attribution >= 0 ? "#2f9e44" : "#e03131", stroke: n.feature === null ? "#000" : "none"});
    c.append(el("svg:title", {}, n.hookpoint + " " + (n.feature === null ? "error" : "feature " + n.feature) + " at " + JSON.stringify(n.token) + ": " + fmt(n.attribution)));
    svg.append(c);
  }
}
function selectToken(b, p) {
  document.querySelectorAll(".tok").forEach((s) => s.classList.toggle("sel", s.dataset.key === b + ":" + p));
  $("toktitle").textContent = "Top nodes at " + JSON.stringify(DATA.tokens[b][p]) + " (position " + p + ")";
  nodeTable($("pertoken"), DATA.nodes.filter((n) => n.batch === b && n.position === p).slice(0, 12));
  document.body.dataset.position = b + ":" + p;
}
function drawValidation() {
  const v = DATA.validation;
  $("valsec").hidden = !v;
  if (!v) return;
  $("valsummary").textContent = "Pearson r between predicted (-attribution) and actual change on ablation: " + fmt(v.pearson) + " over " + v.nodes.length + " features";
  const t = $("validation"), head = el("tr");
  for (const h of ["node", "predicted", "actual"]) head.append(el("th", {}, h));
  t.replaceChildren(head);
  v.nodes.forEach((id, i) => { const tr = el("tr");
    tr.append(el("td", {}, id), el("td", {class: "num"}, fmt(v.predicted[i])), el("td", {class: "num"}, fmt(v.actual[i]))); t.append(tr); });
  if (DATA.validation_png) $("valimg").append(el("img", {src: DATA.validation_png, alt: "predicted vs actual scatter"}));
}
$("title").textContent = DATA.title;
$("summary").textContent = DATA.metric + " = " + fmt(DATA.value) + " | method " + DATA.method + (DATA.method === "ig" ? " (" + DATA.steps + " steps)" : "") + (DATA.linear ? ", attention and norms frozen" : "") + " | " + DATA.nodes.length + " nodes, " + DATA.edges.length + " edges";
DATA.tokens.forEach((row, b) => { const line = el("div");
  row.forEach((t, p) => { const s = el("span", {class: "tok", "data-key": b + ":" + p}, t.replace(/\n/g, "\u21b5"));
    s.addEventListener("click", () => selectToken(b, p)); line.append(s); });
  $("prompt").append(line); });
drawGraph();
nodeTable($("top"), DATA.nodes.slice(0, 30));
drawValidation();
const last = DATA.tokens.length - 1;
selectToken(last, DATA.tokens[last].length - 1);
document.body.dataset.status = "ok";
</script>
</body>
</html>
"""
