"""Training checkpoints: atomic folders holding everything needed to resume bit-identically.

Layout of `<output_dir>/checkpoints/step-00000123/`:
  trainer_state.json   step, tokens, the recipe, process count, hookpoints per rank
  saes/<hookpoint>/     each SAE via `save_pretrained` (weights and config, incl. input_scale)
  rank-<r>.pt           per process: optimizer, scheduler, RNG states, dead-latent counters,
                        data position (loaded with `torch.load(weights_only=True)`: no pickle)
Every process writes into `.tmp-step-...`; the main process renames it once all are done, so
a crash never leaves a half-written `step-*` folder; `latest` names the newest one.
"""

import json
import logging
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import atomic_write_text, set_default_mode

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
STATE_NAME = "trainer_state.json"


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_sae(sae, folder: str | os.PathLike) -> None:
    """`save_pretrained` that also writes on processes other than rank 0.

    transformers' `save_pretrained` silently writes nothing on ranks != 0 once torch.distributed
    is initialized (`should_save_on_this_rank`); with hookpoints spread over processes, each
    process owns SAEs that only it can save. There we write the same two files ourselves.
    """
    if (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    ):
        sae.save_pretrained(folder)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sae.config.save_pretrained(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    set_default_mode(folder / "model.safetensors")  # safetensors writes 0600; rank 0's save_pretrained does this too


def save_checkpoint(accelerator, output_dir, step: int, saes: dict, rank_state: dict, shared: dict, keep: int) -> Path:
    """Write a checkpoint collectively (every process calls this); returns its final path.

    `saes` are the SAEs this process saves (the main process's in data-parallel runs, each
    process's own under hookpoint distribution); `rank_state` is this process's private state.
    """
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "saes").mkdir(parents=True)
    accelerator.wait_for_everyone()
    for name, sae in saes.items():
        save_sae(sae, tmp / "saes" / name)
    torch.save(rank_state, tmp / f"rank-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_NAME).write_text(json.dumps(shared, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(root / LATEST, final.name)
        _prune(root, keep)
        logger.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[: max(0, len(done) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    root = checkpoint_root(output_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / STATE_NAME).is_file() else None


def load_shared_state(path: Path) -> dict:
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a complete checkpoint: {STATE_NAME} is missing")
    return json.loads(state_file.read_text())


def load_rank_state(path: Path, rank: int, map_location: str | torch.device = "cpu") -> dict:
    file = path / f"rank-{rank}.pt"
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} has no state for process {rank} ({file.name})")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{file} holds objects other than tensors and plain containers; hubsae never unpickles arbitrary "
            "objects, so the checkpoint is corrupt or was not written by hubsae (do not load it with weights_only=False)"
        ) from e


def config_differences(saved: dict, current: dict, ignore: set[str]) -> list[str]:
    """Keys whose values differ between the checkpoint's recipe and the current one."""
    keys = (set(saved) | set(current)) - ignore
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def check_output_dir(output_dir: str, hookpoints: list[str], resuming: bool, overwrite: bool) -> None:
    """Refuse a file, an unwritable folder, or a previous run's folder before any work is done."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output_dir {str(out)!r} is a file, not a folder")
    previous = previous_run(out, hookpoints)
    if previous and not resuming and not overwrite:
        raise FileExistsError(
            f"output_dir {str(out)!r} already holds a run ({', '.join(previous)}); resume it (--resume), "
            "choose another output_dir, or pass --overwrite to replace it"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(f"output_dir {str(out)!r} is not writable ({err}); nothing was trained") from err


def previous_run(out: Path, hookpoints: list[str]) -> list[str]:
    """What in `out` belongs to an earlier run: final SAE folders, checkpoints, history."""
    if not out.is_dir():
        return []
    found = [f"{h}/" for h in hookpoints if (out / h / "config.json").is_file()]
    if any(checkpoint_root(out).glob("step-*")):
        found.append(f"{CHECKPOINT_DIR}/")
    if (out / "history.json").is_file():
        found.append("history.json")
    return found
