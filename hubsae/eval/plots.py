"""PNG plots for eval reports: the feature-density histogram (training curves: `hubsae.plots`)."""

import os
from pathlib import Path

from torch import Tensor

from ..plots import figure, have_matplotlib, plot_training_curves, read_history, save_png
from .metrics import density_histogram

__all__ = ["have_matplotlib", "plot_density_histogram", "plot_training_curves", "read_history"]


def plot_density_histogram(density: Tensor, path: str | os.PathLike, title: str = "feature density") -> Path:
    """Histogram of log10(fraction of tokens each latent fires on); dead latents counted in the title."""
    hist = density_histogram(density)
    edges, counts = hist["log10_density_edges"], hist["counts"]
    fig = figure(6, 3.5)
    ax = fig.add_subplot()
    ax.bar(edges[:-1], counts, width=edges[1] - edges[0], align="edge", color="#4c6ef5")
    ax.set_xlabel("log10(feature density)")
    ax.set_ylabel("latents")
    ax.set_title(f"{title} ({hist['dead']} dead of {len(density)})")
    return save_png(fig, path)
