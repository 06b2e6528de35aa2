"""The feature browser's page: one HTML file with inline CSS, JS and SVG (no server, no CDN).

`__DATA__` is replaced by the JSON of `browser.build_browser_data` (every `<`, `>`, `&` written as a
\\u escape, see `browser.script_json`). The page reads `#feature=N` from the URL, so a link or a
headless browser can open any feature directly.
`body[data-status]` becomes "ok" once a feature is drawn, "error" on any script error.
"""

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
header { background: #1d2430; color: #fff; padding: 10px 18px; display: flex; gap: 18px; align-items: center; flex-wrap: wrap; }
header h1 { font-size: 17px; margin: 0; }
header form { display: flex; gap: 6px; }
header input { width: 90px; padding: 3px 6px; }
main { display: grid; grid-template-columns: minmax(300px, 1fr) minmax(420px, 2fr); gap: 14px; padding: 14px 18px; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px 14px; }
h2 { font-size: 15px; margin: 4px 0 8px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eef0f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ctx { font-family: ui-monospace, monospace; font-size: 13px; padding: 3px 0; border-bottom: 1px solid #eef0f3; white-space: pre-wrap; }
.ctx .v { display: inline-block; width: 60px; color: #667; }
.tok { border-radius: 2px; }
.tok.peak { outline: 1px solid #c45500; }
.pos { color: #126b2f; } .neg { color: #a3221b; }
#message { color: #a3221b; } #errors { color: #a3221b; white-space: pre; }
svg { max-width: 560px; display: block; }
svg text { font-size: 10px; fill: #556; }
</style>
</head>
<body data-status="loading">
<header>
  <h1 id="title"></h1>
  <form id="search"><input id="fid" type="number" min="0" placeholder="feature id"><button>Go</button></form>
  <button id="prev">&larr;</button><button id="next">&rarr;</button><span id="message"></span>
</header>
<pre id="errors"></pre>
<main>
  <div>
    <section><h2>SAE</h2><table id="meta"></table></section>
    <section><h2>Feature density (all latents, log<sub>10</sub>)</h2><svg id="density" width="100%" viewBox="0 0 420 150"></svg><div id="dead"></div></section>
  </div>
  <div>
    <section><h2 id="ftitle"></h2><table id="fstats"></table></section>
    <section><h2>Activation histogram (nonzero values)</h2><svg id="acthist" width="100%" viewBox="0 0 420 150"></svg></section>
    <section><h2>Top logits (W<sub>dec</sub> &middot; W<sub>U</sub>)</h2><table id="logits"></table>
      <svg id="logithist" width="100%" viewBox="0 0 420 150"></svg></section>
    <section><h2>Top activating contexts</h2><div id="contexts"></div></section>
    <section id="randomsec"><h2>Random activating contexts (typical activations)</h2><div id="random"></div></section>
  </div>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const fmt = (x) => (x === null || x === undefined) ? "n/a" : Number.isInteger(x) ? String(x) : (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.001)) ? x.toExponential(2) : (+x.toFixed(4)).toString();

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function rows(table, pairs) {
  table.replaceChildren();
  for (const [k, v] of pairs) { const tr = el("tr"); tr.append(el("th", {}, k), el("td", {class: "num"}, v)); table.append(tr); }
}
function bars(svg, heights, left, right, mark) {
  svg.replaceChildren();
  const W = 420, H = 150, pad = 18, n = heights.length, top = Math.max(1, ...heights);
  const bw = (W - 2 * pad) / Math.max(n, 1);
  heights.forEach((h, i) => {
    const bh = (H - 2 * pad) * h / top;
    svg.append(el("svg:rect", {x: pad + i * bw, y: H - pad - bh, width: Math.max(bw - 1, 1), height: bh,
      fill: i === mark ? "#e8590c" : "#4c6ef5"}));
  });
  svg.append(el("svg:text", {x: pad, y: H - 4}, left), el("svg:text", {x: W - pad, y: H - 4, "text-anchor": "end"}, right),
    el("svg:text", {x: pad, y: 11}, "max " + top));
}
function drawDensity(f) {
  const d = DATA.density_hist, edges = d.log10_density_edges;
  let mark = -1;
  if (f && f.frac_nonzero > 0) {
    const v = Math.max(Math.log10(f.frac_nonzero), edges[0]);
    mark = Math.min(d.counts.length - 1, Math.floor((v - edges[0]) / (edges[1] - edges[0])));
  }
  bars($("density"), d.counts, "1e" + edges[0], "1e" + edges[edges.length - 1], mark);
  $("dead").textContent = d.dead + " dead latents (never fired on " + DATA.n_tokens + " tokens)";
}
function drawContexts(box, examples, f) {
  box.replaceChildren();
  if (!examples.length) { box.textContent = "This latent never fired on the evaluated text."; return; }
  for (const a of examples) {
    const line = el("div", {class: "ctx"}); line.append(el("span", {class: "v"}, fmt(a.maxValue)));
    a.tokens.forEach((t, i) => {
      const v = a.values[i], alpha = f.max_act > 0 ? Math.max(0, v) / f.max_act : 0;
      const s = el("span", {class: "tok" + (i === a.maxValueTokenIndex ? " peak" : ""), title: JSON.stringify(t) + ": " + fmt(v)},
        t.replace(/\n/g, "\u21b5"));
      s.style.background = "rgba(255,140,0," + alpha.toFixed(3) + ")";
      line.append(s);
    });
    box.append(line);
  }
}
function drawLogits(f) {
  const t = $("logits"); t.replaceChildren();
  const n = Math.max(f.pos_str.length, f.neg_str.length);
  const head = el("tr"); head.append(el("th", {}, "promoted"), el("th", {}, ""), el("th", {}, "suppressed"), el("th", {}, "")); t.append(head);
  for (let i = 0; i < n; i++) {
    const tr = el("tr");
    tr.append(el("td", {class: "pos"}, JSON.stringify(f.pos_str[i] ?? "")), el("td", {class: "num"}, fmt(f.pos_values[i])),
      el("td", {class: "neg"}, JSON.stringify(f.neg_str[i] ?? "")), el("td", {class: "num"}, fmt(f.neg_values[i])));
    t.append(tr);
  }
}
function show(i) {
  const n = DATA.features.length;
  if (!Number.isInteger(i) || i < 0 || i >= n) { $("message").textContent = "no feature " + i + " (0 to " + (n - 1) + ")"; return; }
  $("message").textContent = "";
  const f = DATA.features[i];
  $("ftitle").textContent = "Feature " + i;
  $("fid").value = i;
  rows($("fstats"), [["density", (100 * f.frac_nonzero).toFixed(4) + "% of tokens"], ["max activation", fmt(f.max_act)],
    ["mean activation (when firing)", fmt(f.mean_act)], ["max decoder cosine", fmt(f.max_cos) + " (feature " + f.max_cos_neighbor + ")"]]);
  const edges = f.freq_hist_data_bar_edges;
  bars($("acthist"), f.freq_hist_data_bar_heights, fmt(edges[0]), fmt(edges[edges.length - 1]), -1);
  const le = f.logits_hist_data_bar_values;
  bars($("logithist"), f.logits_hist_data_bar_heights, "logit effect " + fmt(le[0]), fmt(le[le.length - 1]), -1);
  drawDensity(f); drawLogits(f); drawContexts($("contexts"), f.activations, f);
  $("randomsec").hidden = !f.random_activations;
  if (f.random_activations) drawContexts($("random"), f.random_activations, f);
  document.body.dataset.feature = String(i);
  document.body.dataset.status = "ok";
}
function fromHash() { const m = /feature=(\d+)/.exec(location.hash); return m ? parseInt(m[1], 10) : DATA.first_feature; }
function go(i) { location.hash = "feature=" + i; }
$("title").textContent = DATA.title;
rows($("meta"), Object.entries(DATA.meta).map(([k, v]) => [k, typeof v === "number" ? fmt(v) : String(v)]));
$("search").addEventListener("submit", (e) => { e.preventDefault(); go(parseInt($("fid").value, 10)); });
// from the hash, not the feature drawn: the hash changes at once, the drawing on the next hashchange
const current = () => Math.min(Math.max(fromHash(), 0), DATA.features.length - 1);
$("prev").addEventListener("click", () => go(Math.max(0, current() - 1)));
$("next").addEventListener("click", () => go(Math.min(DATA.features.length - 1, current() + 1)));
window.addEventListener("hashchange", () => show(fromHash()));
show(fromHash());
</script>
</body>
</html>
"""
