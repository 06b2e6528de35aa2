"""Blocks of activations -> shuffled training batches, deterministic and resumable.

A *block* is a buffer of activations ({hookpoint: (N, d)}, rows aligned across hookpoints):
the harvest of `buffer_contexts` contexts, or one shard of the disk cache. Each block is
shuffled with a generator seeded by (seed, epoch, block) and cut into batches; the tail
shorter than a batch is dropped. Because a block is rebuilt exactly from its index, the data
position of a run is just (epoch, block, batch) and resuming re-harvests only one block.

Data parallelism: with `row_shard=(rank, world)` every rank sees the same global blocks and
takes its slice of each global batch (disk cache, in-memory tensors); with rank-local blocks
(a live harvest where each rank reads different contexts) pass `seed_rank=rank` instead.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice

import torch
from torch import Tensor, nn

from .harvest import Harvester

logger = logging.getLogger(__name__)

Block = dict[str, Tensor]
BlockSource = Callable[[int, int], Iterator[tuple[int, Block]]]  # (epoch, first block) -> (index, block)


@dataclass(frozen=True)
class DataPosition:
    """The next batch a stream yields: batch `batch` of block `block` in epoch `epoch`."""

    epoch: int = 0
    block: int = 0
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def block_generator(seed: int, epoch: int, block: int, rank: int) -> torch.Generator:
    # distinct large primes keep (seed, epoch, block, rank) tuples from colliding in practice
    return torch.Generator().manual_seed(seed + 7_919 * epoch + 104_729 * block + 15_485_863 * rank)


class ActivationStream:
    """Yields `(position_after, {hookpoint: (batch_size, d)})` forever, cycling over epochs.

    Args:
        blocks: (epoch, first_block) -> iterator of (block index, block).
        batch_size: rows per yielded (local) batch.
        seed: shuffling seed.
        row_shard: (rank, world) to slice each global batch of `batch_size * world` rows.
        seed_rank: mixed into the shuffle seed when blocks differ per rank.
    """

    def __init__(
        self,
        blocks: BlockSource,
        batch_size: int,
        seed: int = 0,
        row_shard: tuple[int, int] = (0, 1),
        seed_rank: int = 0,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.blocks = blocks
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world = row_shard
        self.seed_rank = seed_rank
        self._warned = False

    def _block_batches(self, pos: DataPosition, index: int, block: Block) -> Iterator[tuple[DataPosition, Block]]:
        rows = {int(t.shape[0]) for t in block.values()}
        if len(rows) != 1:
            raise ValueError(f"block {index} has hookpoints with different row counts: {rows}")
        n = rows.pop()
        global_b = self.batch_size * self.world
        n_batches = n // global_b
        if n and n - n_batches * global_b > 0.1 * n and not self._warned:
            self._warned = True  # the dropped tail is harvest compute thrown away
            logger.warning(
                "each block of %d activations yields %d batches of %d: %.0f%% is dropped; "
                "adjust buffer_contexts or batch_size", n, n_batches, global_b, 100 * (1 - n_batches * global_b / n),
            )  # fmt: skip
        perm = torch.randperm(n, generator=block_generator(self.seed, pos.epoch, index, self.seed_rank))
        first = pos.batch if index == pos.block else 0
        for j in range(first, n_batches):
            idx = perm[j * global_b : (j + 1) * global_b][
                self.rank * self.batch_size : (self.rank + 1) * self.batch_size
            ]
            after = (
                DataPosition(pos.epoch, index, j + 1) if j + 1 < n_batches else DataPosition(pos.epoch, index + 1, 0)
            )
            yield after, {name: t[idx] for name, t in block.items()}

    def __call__(self, start: DataPosition = DataPosition()) -> Iterator[tuple[DataPosition, Block]]:
        pos = start
        while True:
            yielded = False
            for index, block in self.blocks(pos.epoch, pos.block):
                for item in self._block_batches(pos, index, block):
                    yielded = True
                    yield item
            if not yielded and pos.block == 0 and pos.batch == 0:
                raise ValueError(
                    f"the data gives no batch of {self.batch_size * self.world} activations in a whole epoch; "
                    "use more data, a larger buffer or a smaller batch_size"
                )
            pos = DataPosition(pos.epoch + 1, 0, 0)


def harvest_blocks(
    model: nn.Module,
    tokenizer,
    make_contexts: Callable[[], Iterator[Tensor]],
    hookpoints: Sequence[str],
    buffer_contexts: int,
    model_batch_size: int,
    exclude_special_tokens: bool = True,
    context_shard: tuple[int, int] = (0, 1),
    dtype: torch.dtype = torch.float32,
) -> BlockSource:
    """A BlockSource harvesting `buffer_contexts` contexts per block (rank r of w takes contexts r::w).

    Blocks before the requested one are skipped without running the model.
    """
    from .text import special_token_mask

    harvester = Harvester(model, hookpoints)
    rank, world = context_shard
    device = next(model.parameters()).device

    def harvest(ctx: Tensor) -> Block:
        parts: dict[str, list[Tensor]] = {name: [] for name in hookpoints}
        for chunk in ctx.split(model_batch_size):
            acts = harvester(chunk.to(device))
            keep = (
                ~special_token_mask(chunk, tokenizer)
                if exclude_special_tokens
                else torch.ones_like(chunk, dtype=torch.bool)
            )
            for name, a in acts.items():
                parts[name].append(a[keep.to(a.device)].to(dtype))  # (n_kept, d)
        return {name: torch.cat(p) for name, p in parts.items()}

    def blocks(epoch: int, first: int) -> Iterator[tuple[int, Block]]:
        ctx_iter = make_contexts()
        index = 0
        while True:
            group = list(islice(ctx_iter, buffer_contexts))
            if len(group) < buffer_contexts:
                return  # a partial last block would change with buffer boundaries: drop it
            if index >= first:
                mine = torch.stack(group[rank::world])  # (C/w, T)
                yield index, harvest(mine)
            index += 1

    return blocks


def tensor_blocks(data: Block, block_rows: int) -> BlockSource:
    """A BlockSource over in-memory activations, cut into blocks of `block_rows` rows."""
    n = min(int(t.shape[0]) for t in data.values())

    def blocks(epoch: int, first: int) -> Iterator[tuple[int, Block]]:
        for index in range(first, n // block_rows):
            yield index, {k: v[index * block_rows : (index + 1) * block_rows] for k, v in data.items()}

    return blocks
