"""The intervention examples run (on the real SmolLM2), so the README's commands stay true."""

import runpy
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *argv: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_steer_generation(monkeypatch, capsys):
    run_example("steer_generation.py", "--max-new-tokens", "6", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    plain = out.split("plain:")[1].split("steered")[0].strip()
    steered = out.split("steered (feature")[1].split("\n", 1)[1].strip()
    assert plain and steered and plain != steered


def test_ablate_feature(monkeypatch, capsys):
    run_example("ablate_feature.py", "--feature", "7", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "feature 7 fires on" in out and "feature ablated" in out
