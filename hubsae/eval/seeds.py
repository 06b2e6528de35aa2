"""Several seeds of one SAE run: cross-seed feature matching and mean +- sd / bootstrap CI of metrics.

Single-seed differences between SAE benchmarks are often within seed noise, so every metric of a
multi-seed run is reported as mean, sample sd (ddof = 1) and a percentile bootstrap CI of the mean.
With 3 seeds the bootstrap has only 10 distinct resampled means: read its CI as a rough range.

Matching is by **max cosine**, not Hungarian: latent i of seed A is matched when some latent of
seed B has decoder cosine >= `threshold` with it (several may share one counterpart, so this is an
upper bound on a one-to-one assignment; it costs one chunked (F, F) product instead of O(F^3)).
"""

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from .dictionary import cross_max_cosine

MATCH_THRESHOLD = 0.7  # the cosine Paulo & Belrose (arXiv 2501.16615) count a latent as shared at
SEED_DIR = re.compile(r"seed_(\d+)")


def matched_fraction(W_a: Tensor, W_b: Tensor, threshold: float = MATCH_THRESHOLD) -> float:
    """Fraction of W_a's latents with a latent of W_b at decoder cosine >= `threshold` (max cosine)."""
    return float((cross_max_cosine(W_a, W_b) >= threshold).double().mean())


def cross_seed_matching(decoders: Mapping[str, Tensor], threshold: float = MATCH_THRESHOLD) -> dict:
    """Max-cosine matching between every ordered pair of seeds' decoders (A -> B and B -> A differ
    when widths differ): per pair the matched fraction and the mean max cosine, and over all pairs
    their mean and sd."""
    if len(decoders) < 2:
        raise ValueError(f"cross-seed matching needs at least 2 decoders, got {list(decoders)}")
    pairs = {}
    for a, b in itertools.permutations(decoders, 2):
        best = cross_max_cosine(decoders[a], decoders[b])
        pairs[f"{a} -> {b}"] = {
            "matched": float((best >= threshold).double().mean()),
            "mean_max_cosine": float(best.double().mean()),
        }
    summary = aggregate(list(pairs.values()), n_boot=0)
    return {"method": "max cosine (not one-to-one)", "threshold": threshold, "pairs": pairs, "summary": summary}


def flatten_numbers(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """The number-valued entries of a nested mapping, keys joined with "/" (bools and strings left out)."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_numbers(value, f"{name}/"))
        elif isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0):
    """Percentile bootstrap CI of the mean: (low, high); (nan, nan) for fewer than 2 values or n_boot = 0."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2 or n_boot == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def aggregate(
    per_seed: Sequence[Mapping], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "sd", "n", "ci_low", "ci_high"}} over the seeds' metric dicts (nested ones
    flattened with "/"). A metric missing from some seed is aggregated over the seeds that have it
    (`n` says how many); sd is the sample sd (ddof = 1), nan for one seed."""
    if not per_seed:
        raise ValueError("aggregate() needs the metrics of at least one seed")
    flat = [flatten_numbers(m) for m in per_seed]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    out = {}
    for key in keys:
        x = np.array([f[key] for f in flat if key in f])
        low, high = bootstrap_ci(x, n_boot, confidence, seed)
        sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
        out[key] = {"mean": float(x.mean()), "sd": sd, "n": len(x), "ci_low": low, "ci_high": high}
    return out


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """The `seed_<n>` folders of a `hubsae train --seeds` run, by seed number (empty when none)."""
    found = [p for p in Path(run_dir).iterdir() if p.is_dir() and SEED_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(SEED_DIR.fullmatch(p.name).group(1)))


def format_mean_sd(stats: Mapping[str, float]) -> str:
    """ "mean +- sd [ci_low, ci_high]" with 4 significant digits (the CI only where there is one)."""
    text = f"{stats['mean']:.4g} +- {stats['sd']:.2g}" if not math.isnan(stats["sd"]) else f"{stats['mean']:.4g}"
    if not math.isnan(stats.get("ci_low", math.nan)):
        text += f" [{stats['ci_low']:.4g}, {stats['ci_high']:.4g}]"
    return text
