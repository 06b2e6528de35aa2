"""The feature browser on hostile strings: tokens, title and metadata holding HTML that would end,
comment out or nest the page's scripts. Checked with a spec-conformant HTML parser (html5lib) and,
where installed, in headless Chromium: the page keeps its three scripts and draws every string as text."""

import json
import re

import html5lib
import pytest
import torch
from test_eval_browser import CHROMIUM, F, V, _chromium, make_browser_data

from hubsae.eval.browser import render_html, script_json, write_browser_files

HOSTILE = [
    "<!--",  # with a later "<script" this used to open a nested script that swallowed the page's own
    "<script>",
    "<!--<script>",
    "</script>",
    "</SCRIPT >",
    "<!-- a <script> b",
    "-->",
    "<\\/script>",
    "</style><h1>x</h1>",
    "<![CDATA[",
    "]]>",
    "&lt;&amp;",
    "__DATA__",
    "__TITLE__",
    "\u2028\u2029",
    '"\\',
]
TITLE = "SAE <!-- <script> __DATA__ </title>"
NS = {"h": "http://www.w3.org/1999/xhtml"}


META = {"hookpoint": "model.layers.1 <!--", "base_model": "<script>alert(1)</script>", "note": "</script>"}
# sets of strings in one page: the case first ("<!--", later "<script", and no "-->" to end it)
SCENARIOS = {
    "comment-then-script": (["<!--", "a", "<script>", "b"], "plain", {}),
    "comment-script-one-token": (["x", "<!--<script>"], "plain", {}),
    "in-the-title-and-meta": (["x"], "<!-- <script", {"hookpoint": "<!--", "note": "<script>"}),
    "all": (HOSTILE, TITLE, META),
}


def browser_data(strings: list[str], title: str, meta: dict) -> dict:
    """Browser data whose feature 0 fires on every token, each token decoding to one of `strings`."""
    torch.manual_seed(0)
    n = len(strings)
    ids = torch.arange(4 * n).reshape(4, n) % V  # every string occurs in a context, in order
    feats = torch.relu(torch.randn(*ids.shape, F))
    feats[..., 0] = 5.0  # feature 0 fires everywhere: its top contexts hold every string
    return make_browser_data(feats, ids, lambda i: strings[i[0] % n], title, meta, radius=n)


@pytest.fixture(scope="module")
def hostile_data():
    return browser_data(HOSTILE, TITLE, META)


def _shown_strings(data: dict) -> set[str]:
    f0 = data["features"][0]
    return {t for a in f0["activations"] for t in a["tokens"]}


def test_every_hostile_string_is_in_the_data(hostile_data):
    assert set(HOSTILE) <= _shown_strings(hostile_data)


def test_embedded_json_holds_no_angle_bracket_and_reads_back_unchanged(hostile_data):
    payload = script_json(hostile_data)
    assert "<" not in payload and ">" not in payload and "&" not in payload
    assert json.loads(payload) == hostile_data


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_html5lib_sees_the_three_scripts_and_the_data_intact(scenario):
    strings, title, meta = SCENARIOS[scenario]
    data = browser_data(strings, title, meta)
    assert set(strings) <= _shown_strings(data)
    doc = html5lib.parse(render_html(data), treebuilder="etree", namespaceHTMLElements=True)
    scripts = doc.findall(".//h:script", NS)
    assert len(scripts) == 3, [s.text[:80] for s in scripts]
    data_script = doc.find(".//h:script[@id='data']", NS)
    assert data_script.get("type") == "application/json"
    assert json.loads(data_script.text) == data
    assert "JSON.parse" in scripts[2].text and scripts[2].text.rstrip().endswith("show(fromHash());")
    assert doc.find(".//h:title", NS).text == title
    assert doc.find(".//h:body", NS).get("data-status") == "loading"  # the body survived, untouched


def test_a_title_holding_a_placeholder_is_substituted_once(hostile_data):
    html = render_html(hostile_data)
    assert html.count('<script type="application/json" id="data">') == 1
    assert (
        re.search(r"<title>(.*?)</title>", html, re.S).group(1) == "SAE &lt;!-- &lt;script&gt; __DATA__ &lt;/title&gt;"
    )


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/install_chromium.sh needs root and apt)"
)
@pytest.mark.parametrize("scenario", ["comment-then-script", "all"])
def test_hostile_page_draws_in_headless_chromium(scenario, tmp_path):
    strings, title, meta = SCENARIOS[scenario]
    page = write_browser_files(browser_data(strings, title, meta), tmp_path / "site")
    run = _chromium(tmp_path, "--dump-dom", page.as_uri() + "#feature=0")
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if re.search(r"CONSOLE[:(]", line)]
    assert console == [], console
    dom = html5lib.parse(run.stdout, treebuilder="etree", namespaceHTMLElements=True)
    body = dom.find(".//h:body", NS)
    assert body.get("data-status") == "ok" and body.get("data-feature") == "0"
    assert (dom.find(".//h:pre[@id='errors']", NS).text or "") == ""
    assert "".join(dom.find(".//h:h1[@id='title']", NS).itertext()) == title
    tokens = {"".join(span.itertext()) for span in dom.iterfind(".//h:span", NS) if "tok" in span.get("class", "")}
    assert set(strings) <= tokens  # each drawn as text in its own span
    shown_meta = "".join(dom.find(".//h:table[@id='meta']", NS).itertext())
    assert all(value in shown_meta for value in meta.values())
    assert dom.findall(".//h:h1", NS)[1:] == []  # "</style><h1>x</h1>" did not become markup
