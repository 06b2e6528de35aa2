"""Training data: text -> token contexts -> activations (live harvest or disk cache) -> batches."""

from .cache import cache_blocks, read_index, write_cache
from .harvest import Harvester
from .stream import ActivationStream, DataPosition, harvest_blocks, tensor_blocks
from .text import TextSource, contexts, pack_contexts, special_token_mask

__all__ = [
    "ActivationStream",
    "DataPosition",
    "Harvester",
    "TextSource",
    "cache_blocks",
    "contexts",
    "harvest_blocks",
    "pack_contexts",
    "read_index",
    "special_token_mask",
    "tensor_blocks",
    "write_cache",
]
