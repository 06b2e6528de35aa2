"""Two CPU processes under `accelerate launch --multi_gpu` (gloo), against single-process math."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hubsae import AutoSAE
from hubsae.data import write_cache
from hubsae.data.stream import tensor_blocks
from hubsae.train import TrainConfig, Trainer
from hubsae.train.checkpoint import latest_checkpoint

SCRIPT = Path(__file__).with_name("ddp_script.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Activations with structure (sparse sums of 48 directions) at two hookpoints."""
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(48, 16, generator=g)
    codes = torch.rand(64 * 24, 48, generator=g) * (torch.rand(64 * 24, 48, generator=g) < 0.1)
    data = {"a": codes @ dirs + 0.5, "b": (codes @ dirs).flip(-1) * 3}
    folder = tmp_path_factory.mktemp("cache")
    write_cache(tensor_blocks(data, 64 * 4)(0, 0), folder, 10**9, {})
    return folder


def _config(cache, out, hookpoints, **kw):
    fields = dict(
        model="none", activation_cache=str(cache), hookpoints=hookpoints, batch_size=64, max_tokens=64 * 12,
        d_sae=64, sae={"k": 4}, lr=1e-2, log_every=0, progress_bar=False, output_dir=str(out),
        checkpoint_every=5, norm_estimation_batches=2,
    )  # fmt: skip
    fields.update(kw)
    return fields


def _launch(recipe: dict, tmp_path: Path, cli: bool = False) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "weights"
    out.mkdir()
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    cmd += ["-m", "hubsae.cli", "train", str(path)] if cli else [str(SCRIPT), str(path), str(out)]
    done = subprocess.run(cmd, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    return out


def test_data_parallel_matches_single_process_on_the_same_global_batch(cache, tmp_path):
    recipe = _config(cache, tmp_path / "ddp", ["a"], distribute="data")
    out = _launch(recipe, tmp_path)
    r0, r1 = load_file(out / "rank0-a.safetensors"), load_file(out / "rank1-a.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # both processes hold the very same SAE
    single = Trainer(TrainConfig(**_config(cache, tmp_path / "single", ["a"]))).train()["a"].state_dict()
    moved = 0.0
    for k in r0:
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=1e-5)
        moved = max(moved, float((single[k] - r0[k]).abs().max()))
    # one step at a negligible lr (0 is refused as a recipe value): the initial SAE, up to ~1e-12
    init = Trainer(TrainConfig(**_config(cache, tmp_path / "init", ["a"], lr=1e-12, max_tokens=64)))
    start = init.train()["a"].state_dict()
    assert float((start["W_enc"] - single["W_enc"]).abs().max()) > 100 * max(moved, 1e-7)  # training moved it


def test_hookpoints_spread_over_processes_train_like_one_process(cache, tmp_path):
    """Through the CLI under `accelerate launch`: each process trains and saves its own SAE."""
    recipe = _config(cache, tmp_path / "spread", ["a", "b"], distribute="hookpoints")
    _launch(recipe, tmp_path, cli=True)
    assert {"a", "b", "checkpoints"} <= {p.name for p in (tmp_path / "spread").iterdir()}
    single = Trainer(TrainConfig(**_config(cache, tmp_path / "single", ["a", "b"]))).train()
    for name in ("a", "b"):
        got = AutoSAE.from_pretrained(tmp_path / "spread" / name).state_dict()
        in_checkpoint = AutoSAE.from_pretrained(latest_checkpoint(tmp_path / "spread") / "saes" / name).state_dict()
        for k, v in single[name].state_dict().items():
            assert torch.equal(got[k], v) and torch.equal(in_checkpoint[k], v), (name, k)
