"""The feature browser: its data, its HTML, and the page itself in headless Chromium."""

import json
import os
import re
import select
import shutil
import stat
import subprocess
import time

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


def make_browser_data(feats, ids, decode, title: str, meta: dict, n_samples: int = 0, radius: int = 3) -> dict:
    """Browser data for features `feats` (B, T, F) on tokens `ids` (B, T), with random W_dec and W_U."""
    x = torch.randn(*ids.shape, D)
    metrics, top, hist = ReconstructionMetrics(D, F), TopActivations(F, k=5, radius=radius), ActivationHistogram(F)
    samples = TopActivations(F, k=n_samples, radius=radius, sample=True) if n_samples else None
    metrics.update(x, x + 0.1 * torch.randn_like(x), feats)
    for collector in (top, samples) if samples else (top,):
        collector.update(feats, ids)
    hist.update(feats)
    W_dec, W_U = torch.randn(F, D), torch.randn(V, D)
    return build_browser_data(
        metrics=metrics,
        top=top,
        hist=hist,
        effects=logit_effects(W_dec, W_U, n=4),
        nearest=decoder_nearest_neighbours(W_dec),
        decode=decode,
        title=title,
        meta=meta,
        samples=samples,
    )


@pytest.fixture
def browser_data():
    feats = torch.relu(torch.randn(6, 16, F) - 1)
    feats[..., 5] = 0.0  # a dead latent
    ids = torch.randint(0, V, (6, 16))
    ids[0, 3] = 7
    feats[0, 3, 12] = 50.0  # feature 12's top context holds the hostile token
    meta = {"hookpoint": "model.layers.1", "d_sae": 4608, "fvu": 0.123456}
    return make_browser_data(feats, ids, _decode, "test <browser>", meta, n_samples=2)


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


class _DevTools:
    """Chromium driven over the DevTools protocol on a pipe (fds 3 and 4, JSON messages ending in NUL):
    enough to click the page's controls and read the console, with no extra Python package."""

    def __init__(self, profile):
        self.r_cmd, self.w_cmd = os.pipe()
        self.r_out, self.w_out = os.pipe()

        def wire():  # in the child: the pipe ends become fds 3 (commands in) and 4 (replies out)
            a, b = os.dup(self.r_cmd), os.dup(self.w_out)
            os.dup2(a, 3)
            os.dup2(b, 4)

        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        cmd += [f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(
            cmd, preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(self.r_cmd)
        os.close(self.w_out)
        self.buf, self.next_id, self.session, self.events = b"", 0, None, []

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.w_cmd, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    assert "error" not in reply, reply
                    return reply["result"]
                self.events.append(reply)
            if select.select([self.r_out], [], [], 0.5)[0]:
                self.buf += os.read(self.r_out, 1 << 20)
        raise TimeoutError(f"chromium did not answer {method} within {timeout}s")

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Runtime.enable")  # from here on console calls and exceptions arrive as events
        self.call("Page.navigate", url=url)
        self.js(
            "new Promise(r => { const t = setInterval(() => { if (document.body && "
            "document.body.dataset.status !== 'loading') { clearInterval(t); r(); } }, 50); })"
        )

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")

    def close(self) -> None:
        try:
            self.session = None
            self.call("Browser.close", timeout=20)
        except (OSError, TimeoutError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            os.close(self.w_cmd)
            os.close(self.r_out)


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/install_chromium.sh needs root and apt)"
)
def test_search_box_and_arrows_drive_the_page(browser_data, tmp_path):
    page = write_browser_files(browser_data, tmp_path / "site")
    shown = "[document.body.dataset.status, document.body.dataset.feature, location.hash, $('message').textContent]"
    search = "n => { $('fid').value = n; $('search').querySelector('button').click(); }"
    settle = "new Promise(r => setTimeout(r, 100))"  # hashchange fires asynchronously
    browser = _DevTools(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        first = browser_data["first_feature"]
        assert browser.js(shown) == ["ok", str(first), "", ""]
        browser.js(f"({search})(7)")
        browser.js(settle)
        assert browser.js(shown) == ["ok", "7", "#feature=7", ""]
        assert browser.js("$('ftitle').textContent") == "Feature 7"
        n_contexts = len(browser_data["features"][7]["activations"])
        assert browser.js("$('contexts').querySelectorAll('.ctx').length") == n_contexts > 0
        browser.js("$('next').click()")
        browser.js(settle)
        assert browser.js(shown)[1:3] == ["8", "#feature=8"]
        browser.js("$('prev').click(); $('prev').click()")
        browser.js(settle)
        assert browser.js(shown)[1:3] == ["6", "#feature=6"]  # two quick clicks move two features
        browser.js(f"({search})(999)")
        browser.js(settle)
        assert browser.js(shown)[3] == "no feature 999 (0 to 23)"
        noise = [
            e for e in browser.events if e.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown")
        ]
        assert noise == []
    finally:
        browser.close()


def test_browser_files_get_the_umask_mode(browser_data, tmp_path):
    old = os.umask(0o027)
    try:
        write_browser_files(browser_data, tmp_path)
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o640}


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    [
        ("browse", "--max-contexts", "0", "argument --max-contexts: must be at least 1, got 0"),
        ("browse", "--max-contexts", "-3", "argument --max-contexts: must be at least 1, got -3"),
        ("browse", "--examples", "0", "argument --examples: must be at least 1, got 0"),
        ("browse", "--samples", "-1", "argument --samples: must be at least 0, got -1"),
        ("browse", "--radius", "x", "argument --radius: expected an integer, got 'x'"),
        ("eval", "--max-contexts", "0", "argument --max-contexts: must be at least 1, got 0"),
        ("eval", "--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
        ("eval", "--context-length", "-1", "argument --context-length: must be at least 1, got -1"),
        ("eval", "--skip-contexts", "-2", "argument --skip-contexts: must be at least 0, got -2"),
    ],
)
def test_cli_refuses_nonsense_counts_before_loading_anything(command, option, value, message, capsys):
    from hubsae.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "no-such-sae", "--data", "no-such-data", option, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
