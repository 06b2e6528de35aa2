"""benchmarks/train_step.py runs end to end on a tiny shape; a missing peer prints "not installed"."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("train_step_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_benchmark_tiny(bench, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sparsify", None)  # an import of sparsify now fails
    argv = ["train_step.py", "--shapes", "16/64/4", "--tokens", "32", "--steps", "1", "--warmup", "1", "--check"]
    monkeypatch.setattr(sys, "argv", argv + ["--contenders", "hubsae", "hubsae-plain", "hubsae-batch", "sparsify"])
    bench.main()
    out = capsys.readouterr().out
    rows = {line.split("|")[2].strip(): line for line in out.splitlines() if line.startswith("| 16/64/4")}
    assert set(rows) == {"enc-GEMM bound", "hubsae", "hubsae-plain", "hubsae-batch", "sparsify"}
    assert "not installed" in rows["sparsify"]
    for name in ("hubsae", "hubsae-plain", "hubsae-batch"):
        tok_s = float(rows[name].split("|")[3].replace(",", ""))
        assert tok_s > 0
    assert "check 16/64/4: PASS" in out


@pytest.mark.slow
def test_train_step_benchmark_real_smollm2_activations(bench, monkeypatch, capsys, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog, and the dog sleeps on. " * 60)
    argv = ["train_step.py", "--shapes", "576/64/4", "16/64/4", "--tokens", "64", "--steps", "1", "--warmup", "0"]
    monkeypatch.setattr(sys, "argv", argv + ["--contenders", "hubsae", "--real", str(text), "--layer", "3"])
    bench.main()
    out = capsys.readouterr().out
    assert "SmolLM2 layer 3 activations" in out
    assert "| 16/64/4 | skipped: --real gives d_in 576" in out  # shapes of another width are skipped
    row = next(line for line in out.splitlines() if line.startswith("| 576/64/4 | hubsae |"))
    assert float(row.split("|")[3].replace(",", "")) > 0
