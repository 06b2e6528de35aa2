"""PNG plots with matplotlib, an optional extra (`pip install hubsae[plots]`; the dev extra has it).

Figures are built with the object-oriented API (`Figure` + the Agg canvas), so no global pyplot
state or backend is touched. Training curves live here, below both `train` and `eval`, which draw them.
"""

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .files import atomic_write

logger = logging.getLogger(__name__)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("PNG plots need matplotlib: pip install 'hubsae[plots]'") from e
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write the PNG atomically (see `hubsae.files.atomic_write`)."""
    path = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    logger.info("wrote %s", path)
    return path


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
    fig = figure(5 * len(metrics), 3.5)
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
    return save_png(fig, path)
