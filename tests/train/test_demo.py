"""The README's main job (`make demo`) on the real SmolLM2, shortened: train, save, reload, find a
concept feature, sweep its steering curve, steer."""

import json
import logging

import pytest

from hubsae import AutoSAE, demo
from hubsae.cli import main
from hubsae.eval.steering import feature_label


@pytest.mark.slow
def test_demo_trains_saves_reloads_and_steers(tmp_path, caplog, monkeypatch):
    pytest.importorskip("gguf")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # a small public-domain stand-in for corpus:shakespeare, so the test needs no download
    sonnet = (
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate: Rough winds do shake "
        "the darling buds of May, And summer's lease hath all too short a date.\n"
    )
    (corpus / "sonnets.txt").write_text(sonnet * 1500)  # the browser skips the 260 contexts training may use
    monkeypatch.setattr("hubsae.demo.DEMO_DATASET", str(corpus))
    with caplog.at_level(logging.INFO, logger="hubsae.demo"):
        main(
            [
                "demo",
                "--max-tokens",
                "4096",
                "--expansion-factor",
                "1",
                "--output-dir",
                str(tmp_path / "run"),
                "--browser-contexts",
                "4",
                "--candidates",
                "2",
                "--max-new-tokens",
                "6",
            ]
        )
    report = caplog.text
    assert "reloaded with AutoSAE.from_pretrained" in report and "FVU=" in report and "steered:" in report
    # the feature and strength come from the measured curves, and the steered text is shown per prompt
    assert "features for 'the sea'" in report and "steering curves" in report and "chose feature" in report
    curves = json.loads((tmp_path / "run" / "steering" / "steering.json").read_text())["curves"]
    # the two candidates, then both steered together
    assert len(curves) == 3 and all(len(c["points"]) == len(demo.STRENGTHS) for c in curves)
    assert curves[2]["feature"] == [curves[0]["feature"], curves[1]["feature"]]
    chosen = report.split("chose ")[1].split(" at ")[0]
    assert chosen in [
        feature_label(c["feature"] if isinstance(c["feature"], int) else tuple(c["feature"])) for c in curves
    ]
    n = len(demo.PROMPTS)
    assert report.count("    steered: concept=") == n and report.count("    plain:   concept=") == n
    assert "sea words " in report
    page = tmp_path / "run" / "browser" / "index.html"
    assert f"feature browser (open offline in any browser): {page}" in report
    assert "<html" in page.read_text()[:500].lower()
    sae = AutoSAE.from_pretrained(tmp_path / "run" / "model.layers.6")
    assert sae.config.d_sae == 576 and sae.config.input_norm == "scale"
