"""The feature browser: its data, its HTML, and the page itself in headless Chromium."""

import json
import re
import shutil
import subprocess

import pytest
import torch

from hubsae.eval.browser import build_browser_data, render_html, write_browser_files
from hubsae.eval.examples import ActivationHistogram, TopActivations
from hubsae.eval.metrics import ReconstructionMetrics, decoder_nearest_neighbours
from hubsae.eval.stats import logit_effects

F, D, V = 24, 8, 50


def _decode(ids: list[int]) -> str:
    # token 7 tries to break out of the page's <script>; the page must show it as text
    return "</script><b>x" if ids[0] == 7 else f"t{ids[0]} "


@pytest.fixture
def browser_data():
    feats = torch.relu(torch.randn(6, 16, F) - 1)
    feats[..., 5] = 0.0  # a dead latent
    ids = torch.randint(0, V, (6, 16))
    ids[0, 3] = 7
    feats[0, 3, 12] = 50.0  # feature 12's top context holds the hostile token
    x = torch.randn(6, 16, D)
    metrics, top, hist = ReconstructionMetrics(D, F), TopActivations(F, k=5, radius=3), ActivationHistogram(F)
    samples = TopActivations(F, k=2, radius=3, sample=True)
    metrics.update(x, x + 0.1 * torch.randn_like(x), feats)
    top.update(feats, ids)
    samples.update(feats, ids)
    hist.update(feats)
    W_dec, W_U = torch.randn(F, D), torch.randn(V, D)
    return build_browser_data(
        metrics=metrics,
        top=top,
        hist=hist,
        effects=logit_effects(W_dec, W_U, n=4),
        nearest=decoder_nearest_neighbours(W_dec),
        decode=_decode,
        title="test <browser>",
        meta={"hookpoint": "model.layers.1", "d_sae": 4608, "fvu": 0.123456},
        samples=samples,
    )


def test_browser_data_fields(browser_data):
    feats = browser_data["features"]
    assert len(feats) == F and [f["feature_index"] for f in feats] == list(range(F))
    f12 = feats[12]
    assert f12["max_act"] == 50.0 and f12["activations"][0]["maxValue"] == 50.0
    top = f12["activations"][0]
    assert top["tokens"][top["maxValueTokenIndex"]] == "</script><b>x"
    assert len(f12["pos_str"]) == 4 and f12["pos_values"] == sorted(f12["pos_values"], reverse=True)
    assert sum(f12["freq_hist_data_bar_heights"]) == round(f12["frac_nonzero"] * browser_data["n_tokens"])
    assert feats[5]["activations"] == [] and feats[5]["frac_nonzero"] == 0.0
    assert feats[5]["random_activations"] == [] and len(f12["random_activations"]) == 2
    assert browser_data["density_hist"]["dead"] == 1


def test_html_embeds_the_data_losslessly(browser_data, tmp_path):
    page = write_browser_files(browser_data, tmp_path)
    html = page.read_text(encoding="utf-8")
    assert html == render_html(browser_data)
    assert "<title>test &lt;browser&gt;</title>" in html
    payload = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1)
    assert json.loads(payload) == browser_data  # the hostile token did not end the <script> early
    assert json.loads((tmp_path / "features.json").read_text(encoding="utf-8")) == browser_data
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    cmd += [f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/install_chromium.sh needs root and apt)"
)
def test_page_in_headless_chromium(browser_data, tmp_path):
    page = write_browser_files(browser_data, tmp_path / "site")
    url = page.as_uri()
    run = _chromium(tmp_path, "--dump-dom", url + "#feature=12")
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    console = [line for line in run.stderr.splitlines() if re.search(r"CONSOLE[:(]", line)]
    assert console == [], console  # no console output at all: no errors, no uncaught exceptions
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-status="ok"' in body and 'data-feature="12"' in body, body
    assert '<h2 id="ftitle">Feature 12</h2>' in dom
    assert '<pre id="errors"></pre>' in dom
    assert '<td class="num">4608</td>' in dom and '<td class="num">0.1235</td>' in dom  # ints stay ints
    # the hostile token is rendered as text inside a highlighted span, not as markup
    assert "&lt;/script&gt;&lt;b&gt;x</span>" in dom
    f12 = browser_data["features"][12]
    assert dom.count('class="ctx"') == len(f12["activations"]) + len(f12["random_activations"]) > 5

    missing = _chromium(tmp_path, "--dump-dom", url + "#feature=999")
    assert "no feature 999 (0 to 23)" in missing.stdout

    shot = tmp_path / "shot.png"
    run = _chromium(
        tmp_path, "--hide-scrollbars", "--window-size=1280,1000", f"--screenshot={shot}", url + "#feature=3"
    )
    assert run.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
