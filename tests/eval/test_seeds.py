"""Cross-seed matching and aggregation over seeds (checked against numpy), and `hubsae train --seeds`."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hubsae import AutoSAE
from hubsae.cli import main
from hubsae.eval.seeds import (
    aggregate,
    bootstrap_ci,
    cross_seed_matching,
    flatten_numbers,
    format_mean_sd,
    matched_fraction,
    seed_dirs,
)

sys.path.insert(0, str(Path(__file__).parent.parent / "data"))
import tinylm  # noqa: E402


def test_matching_permuted_copy_is_complete_and_random_is_low():
    W = torch.randn(300, 64)
    assert matched_fraction(W, W[torch.randperm(300)]) == 1.0
    assert matched_fraction(W, -W) == 0.0  # anti-parallel directions are no counterpart
    assert matched_fraction(W, torch.randn(300, 64)) < 0.01
    half = torch.cat([W[:150], torch.randn(150, 64)])
    assert matched_fraction(W, half) == pytest.approx(0.5, abs=0.01)


def test_cross_seed_matching_pairs_and_summary():
    W = torch.randn(100, 32)
    out = cross_seed_matching({"0": W, "1": W.flip(0), "2": torch.randn(100, 32)})
    assert out["pairs"]["0 -> 1"]["matched"] == 1.0
    assert out["pairs"]["0 -> 2"]["matched"] < 0.05
    assert len(out["pairs"]) == 6
    matched = [p["matched"] for p in out["pairs"].values()]
    assert out["summary"]["matched"]["mean"] == pytest.approx(np.mean(matched))
    assert out["summary"]["matched"]["sd"] == pytest.approx(np.std(matched, ddof=1))
    with pytest.raises(ValueError, match="at least 2"):
        cross_seed_matching({"0": W})


def test_aggregate_against_numpy():
    rng = np.random.default_rng(0)
    runs = [{"fvu": float(v), "nested": {"ev": float(1 - v)}, "name": "x", "ok": True} for v in rng.random(5)]
    runs[0]["only_first"] = 3.0
    out = aggregate(runs, n_boot=4000)
    fvu = np.array([r["fvu"] for r in runs])
    assert out["fvu"]["mean"] == pytest.approx(fvu.mean()) and out["fvu"]["sd"] == pytest.approx(fvu.std(ddof=1))
    assert out["nested/ev"]["mean"] == pytest.approx(1 - fvu.mean())
    assert out["fvu"]["ci_low"] < fvu.mean() < out["fvu"]["ci_high"]
    assert fvu.min() <= out["fvu"]["ci_low"] and out["fvu"]["ci_high"] <= fvu.max()
    only = out["only_first"]  # one seed has it: no spread, no interval
    assert only["mean"] == 3.0 and only["n"] == 1 and all(np.isnan(only[k]) for k in ("sd", "ci_low", "ci_high"))
    assert "name" not in out and "ok" not in out
    with pytest.raises(ValueError, match="at least one seed"):
        aggregate([])


def test_bootstrap_ci_matches_the_normal_approximation_on_a_large_sample():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    low, high = bootstrap_ci(x, n_boot=4000)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.2 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.2 * half)


def test_flatten_and_format():
    assert flatten_numbers({"a": 1, "b": {"c": 2.5, "d": "s"}, "e": False}) == {"a": 1.0, "b/c": 2.5}
    assert format_mean_sd({"mean": 0.5, "sd": 0.01, "ci_low": 0.49, "ci_high": 0.51}) == "0.5 +- 0.01 [0.49, 0.51]"
    assert format_mean_sd({"mean": 0.5, "sd": float("nan"), "ci_low": float("nan")}) == "0.5"


def test_seed_dirs_sorted_by_number(tmp_path):
    for name in ("seed_10", "seed_2", "seed_x", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "seed_3").write_text("a file, not a run")
    assert [p.name for p in seed_dirs(tmp_path)] == ["seed_2", "seed_10"]


def test_train_seeds_writes_one_run_per_seed(tmp_path):
    model_dir, corpus = tinylm.build(tmp_path / "tiny")
    tiny = {"model": str(model_dir), "dataset": str(corpus), "hookpoints": ["model.layers.1"], "sae": {"k": 4}}
    steps = {"context_length": 16, "buffer_contexts": 16, "batch_size": 64, "max_tokens": 256, "progress_bar": False}
    recipe = {**tiny, **steps, "seed": 5, "output_dir": str(tmp_path / "run")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    main(["train", str(path), "--seeds", "2"])
    runs = seed_dirs(tmp_path / "run")
    assert [p.name for p in runs] == ["seed_5", "seed_6"]
    a, b = (AutoSAE.from_pretrained(p / "model.layers.1").W_dec for p in runs)
    assert not torch.equal(a, b)  # different seeds, different initializations
    main(["train", str(path), "-o", "seed=6", "-o", f"output_dir={tmp_path / 'single'}"])
    torch.testing.assert_close(AutoSAE.from_pretrained(tmp_path / "single" / "model.layers.1").W_dec, b)
    with pytest.raises(SystemExit):
        main(["train", str(path), "--seeds", "0"])
