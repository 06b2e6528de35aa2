"""PNG plots for reports: the feature-density histogram and L0 / FVU curves over training.

matplotlib is an optional extra (`pip install hubsae[plots]`; the dev extra includes it). Figures
are built with the object-oriented API (`Figure` + the Agg canvas), so no global pyplot state or
backend is touched.
"""

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from .metrics import density_histogram

logger = logging.getLogger(__name__)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("PNG plots need matplotlib: pip install 'hubsae[plots]'") from e
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    """Write the PNG through a temporary file and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s", path)
    return path


def plot_density_histogram(density: Tensor, path: str | os.PathLike, title: str = "feature density") -> Path:
    """Histogram of log10(fraction of tokens each latent fires on); dead latents counted in the title."""
    hist = density_histogram(density)
    edges, counts = hist["log10_density_edges"], hist["counts"]
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    ax.bar(edges[:-1], counts, width=edges[1] - edges[0], align="edge", color="#4c6ef5")
    ax.set_xlabel("log10(feature density)")
    ax.set_ylabel("latents")
    ax.set_title(f"{title} ({hist['dead']} dead of {len(density)})")
    return _save(fig, path)


def read_history(path: str | os.PathLike) -> list[dict]:
    """Training metrics from a JSON list or a JSON-lines file, one {"step": ..., metric: value} per log."""
    text = Path(path).read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path}: the training history is empty")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def plot_training_curves(
    history: Sequence[Mapping[str, float]], path: str | os.PathLike, metrics: Sequence[str] = ("l0", "fvu")
) -> Path:
    """One panel per metric suffix (e.g. `model.layers.6/l0` and `l0` both end in "l0"), one line per key."""
    if not history:
        raise ValueError("plot_training_curves needs at least one logged step")
    fig = _figure(5 * len(metrics), 3.5)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, suffix in zip(axes, metrics, strict=True):
        keys = sorted({k for row in history for k in row if k == suffix or k.endswith(("/" + suffix, "_" + suffix))})
        if not keys:
            raise ValueError(f"no logged metric ends in {suffix!r}; keys: {sorted({k for r in history for k in r})}")
        for key in keys:
            points = [(row["step"], row[key]) for row in history if key in row and "step" in row]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=key)
        ax.set_xlabel("step")
        ax.set_title(suffix.upper() if len(suffix) <= 3 else suffix)
        ax.set_yscale("log" if suffix == "fvu" else "linear")
        ax.legend(fontsize=7)
    return _save(fig, path)
