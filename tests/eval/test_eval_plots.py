import json
import struct

import pytest
import torch

from hubsae.eval.plots import have_matplotlib, plot_density_histogram, plot_training_curves, read_history

pytestmark = pytest.mark.skipif(
    not have_matplotlib(), reason="matplotlib is not installed (pip install 'hubsae[plots]')"
)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_density_histogram_png(tmp_path):
    density = torch.tensor([0.0, 0.5, 1e-3, 1e-4, 2e-3, 0.0])
    out = plot_density_histogram(density, tmp_path / "d" / "density.png")
    assert _png_size(out) == (600, 350)
    assert not list((tmp_path / "d").glob(".*"))  # no temporary file left behind


def test_training_curves_png_from_jsonl(tmp_path):
    rows = [{"step": s, "model.layers.1/l0": 40 - s, "model.layers.1/fvu": 1 / (s + 1), "lr": 1e-3} for s in range(10)]
    hist = tmp_path / "history.jsonl"
    hist.write_text("\n".join(json.dumps(r) for r in rows))
    assert read_history(hist) == rows
    out = plot_training_curves(read_history(hist), tmp_path / "curves.png")
    assert _png_size(out) == (1000, 350)
    with pytest.raises(ValueError, match="no logged metric ends in 'l1'"):
        plot_training_curves(rows, tmp_path / "x.png", metrics=("l1",))
