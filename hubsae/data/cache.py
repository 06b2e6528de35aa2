"""A sharded on-disk activation cache: one safetensors file per block plus `index.json`.

Harvest once, train many SAEs (other sizes, architectures, seeds) from the same files. A
shard holds one block ({hookpoint: (N, d)}, rows aligned across hookpoints), so training
from the cache sees exactly the blocks a live harvest would, and gives identical weights.
Shards are written to a temporary name and renamed; `index.json` is written last, so a
folder with an index is complete.
"""

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from ..files import atomic_write, atomic_write_text
from .stream import Block, BlockSource

logger = logging.getLogger(__name__)

CACHE_INDEX_NAME = "index.json"
CACHE_FORMAT = "hubsae-activation-cache/1"


def _save_shard(block: Block, path: Path) -> None:
    """Write one shard under a temporary name and rename it (readable like any file the user writes)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in block.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp), suffix=".safetensors")


def write_cache(
    blocks: Iterator[tuple[int, Block]],
    folder: str | os.PathLike,
    max_tokens: int,
    metadata: dict[str, Any],
    batch_size: int = 1,
) -> dict:
    """Write blocks until they hold `max_tokens` trainable rows (or the blocks end); returns the index.

    A block's trainable rows are its whole batches of `batch_size` (the tail is dropped in training).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards, total, usable, dims = [], 0, 0, {}
    for index, block in blocks:
        if usable >= max_tokens:
            break
        name = f"shard-{index:05d}.safetensors"
        _save_shard(block, folder / name)
        n = int(next(iter(block.values())).shape[0])
        dims = {k: int(v.shape[-1]) for k, v in block.items()}
        shards.append({"file": name, "n_tokens": n})
        total += n
        usable += n // batch_size * batch_size
    if not shards:
        raise ValueError(f"no activations to cache in {str(folder)!r}: the data gave no full block")
    index = {"format": CACHE_FORMAT, "hookpoints": dims, "n_tokens": total, "shards": shards, "metadata": metadata}
    atomic_write_text(folder / CACHE_INDEX_NAME, json.dumps(index, indent=2))
    logger.info("cached %d activations in %d shards at %s", total, len(shards), folder)
    return index


def read_index(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CACHE_INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not an activation cache: {CACHE_INDEX_NAME} is missing")
    index = json.loads(path.read_text())
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: unknown cache format {index.get('format')!r}, expected {CACHE_FORMAT!r}")
    return index


def cache_blocks(folder: str | os.PathLike, hookpoints: Sequence[str]) -> BlockSource:
    """A BlockSource reading the cache's shards (one block each) for the given hookpoints."""
    folder = Path(folder)
    index = read_index(folder)
    missing = [h for h in hookpoints if h not in index["hookpoints"]]
    if missing:
        raise ValueError(
            f"activation cache {str(folder)!r} has no hookpoints {missing}; it has {list(index['hookpoints'])}"
        )

    def blocks(epoch: int, first: int) -> Iterator[tuple[int, Block]]:
        for i, shard in enumerate(index["shards"]):
            if i < first:
                continue
            with safe_open(str(folder / shard["file"]), framework="pt") as f:
                yield i, {h: f.get_tensor(h) for h in hookpoints}

    return blocks
