"""Fast training paths: sparse autograd functions for TopK-style SAEs.

`HUBSAE_SPARSE_TRAIN=0` in the environment turns the sparse training forward off (the plain
dense path of `saes.base.SAE.forward` runs instead), e.g. to compare the two.
"""

import functools
import logging
import os

from .select import topk_flat, topk_rows
from .sparse_coding import SparseTopKCode, auxk_from_decoded, sparse_topk_code

logger = logging.getLogger(__name__)
ENV_SWITCH = "HUBSAE_SPARSE_TRAIN"


def sparse_training_enabled() -> bool:
    """False when the environment sets HUBSAE_SPARSE_TRAIN to 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def announce_path(owner: str, sparse: bool) -> None:
    """Log once per process which training path an architecture takes."""
    if sparse:
        logger.info("%s trains through the sparse TopK autograd path (hubsae.ops)", owner)
    else:
        logger.info("%s trains through the plain dense path (%s=0)", owner, ENV_SWITCH)


__all__ = [
    "ENV_SWITCH",
    "SparseTopKCode",
    "announce_path",
    "auxk_from_decoded",
    "sparse_topk_code",
    "sparse_training_enabled",
    "topk_flat",
    "topk_rows",
]
