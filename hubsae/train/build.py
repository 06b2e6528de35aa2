"""Building blocks of a run: the base model, the activation stream, the SAEs."""

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.cache import CACHE_INDEX_NAME, cache_blocks, write_cache
from ..data.stream import ActivationStream, Block, BlockSource, harvest_blocks
from ..data.text import TextSource, contexts
from ..llm import hub_model_id
from ..saes.base import REGISTRY, SAE
from .config import TrainConfig

logger = logging.getLogger(__name__)

PAM_OFF = ("normalize_decoder", "subtract_b_dec")


def load_model(config: TrainConfig):
    """(model, tokenizer) for `config.model`, in eval mode with frozen weights."""
    from ..llm import load_causal_lm

    model, tokenizer = load_causal_lm(config.model, getattr(torch, config.model_dtype))
    model.eval().requires_grad_(False)
    return model, tokenizer


def text_source(config: TrainConfig) -> TextSource:
    return TextSource(
        path=config.dataset,
        glob=config.dataset_glob,
        split=config.dataset_split,
        text_column=config.dataset_text_column,
        config_name=config.dataset_config,
        streaming=config.dataset_streaming,
    )


def harvest_source(config: TrainConfig, model, tokenizer, hookpoints: list[str], shard=(0, 1)) -> BlockSource:
    source = text_source(config)
    return harvest_blocks(
        model,
        tokenizer,
        lambda: contexts(source, tokenizer, config.context_length, config.prepend_bos),
        hookpoints,
        buffer_contexts=config.buffer_contexts,
        model_batch_size=config.model_batch_size,
        exclude_special_tokens=config.exclude_special_tokens,
        context_shard=shard,
    )


def ensure_cache(config: TrainConfig, model, tokenizer) -> None:
    """Harvest into `config.activation_cache` unless it already holds an index (main process only)."""
    folder = Path(config.activation_cache)
    if (folder / CACHE_INDEX_NAME).is_file():
        return
    logger.info("harvesting %d tokens into the activation cache %s", config.max_tokens, folder)
    blocks = harvest_source(config, model, tokenizer, config.harvested(config.hookpoints))(0, 0)
    meta = {
        k: config.to_dict()[k] for k in ("model", "dataset", "context_length", "prepend_bos", "exclude_special_tokens")
    }
    write_cache(blocks, folder, config.max_tokens, meta, batch_size=config.batch_size)


def make_stream(
    config: TrainConfig, hookpoints: list[str], model, tokenizer, rank: int, world: int, data_parallel: bool
):
    """The local activation stream of this process."""
    local_batch = config.batch_size // world if data_parallel else config.batch_size
    hookpoints = config.harvested(hookpoints)  # a transcoder's write point comes in the same pass
    if config.activation_cache:
        blocks = cache_blocks(config.activation_cache, hookpoints)
        shard = (rank, world) if data_parallel else (0, 1)
        return ActivationStream(blocks, local_batch, config.seed, row_shard=shard)
    shard = (rank, world) if data_parallel else (0, 1)
    blocks = harvest_source(config, model, tokenizer, hookpoints, shard=shard)
    return ActivationStream(blocks, local_batch, config.seed, seed_rank=rank if data_parallel else 0)


def batch_statistics(batches: list[Block], reduce) -> dict[str, tuple[float, Tensor]]:
    """Per hookpoint: (mean activation norm, mean activation) over the batches, averaged over processes."""
    stats = {}
    for name in batches[0]:
        rows = torch.cat([b[name] for b in batches]).float()
        norm = reduce(rows.norm(dim=-1).mean().reshape(1))
        mean = reduce(rows.mean(0))
        stats[name] = (float(norm), mean)
    return stats


def init_sae(config: TrainConfig, hookpoint: str, stats: dict[str, tuple[int, float, Tensor]], index: int) -> SAE:
    """A fresh SAE for one hookpoint, seeded by its position in the recipe (not by the process layout).
    `stats` holds (width, scale, mean) of the hookpoint and of its write point (a transcoder's)."""
    if config.architecture not in REGISTRY:
        raise ValueError(f"unknown architecture {config.architecture!r}; registered: {sorted(REGISTRY)}")
    config_cls, model_cls = REGISTRY[config.architecture]
    d_in, scale, _ = stats[hookpoint]
    write = config.write_point(hookpoint)
    d_out, out_scale, mean = stats[write or hookpoint]
    fields = dict(
        d_in=d_in,
        d_sae=config.d_sae or config.expansion_factor * d_in,
        hookpoint=hookpoint,
        base_model_name_or_path=hub_model_id(config.model),
        input_norm="scale" if config.normalize_activations else "none",
        input_scale=scale if config.normalize_activations else 1.0,
    )
    if write is not None:  # a transcoder: its b_dec is the write point's bias, never subtracted from x
        fields.update(hookpoint_out=write, d_out=d_out, subtract_b_dec=False)
        fields["output_scale"] = out_scale if config.normalize_activations else 1.0
    if config.method == "pam_sgd":
        # renormalizing decoder rows would undo the closed-form solve, and subtracting b_dec before
        # encoding would change the codes the decoder was just solved for
        for key in PAM_OFF:
            if config.sae.get(key, False):
                raise ValueError(f"sae: {key}=True cannot be combined with method='pam_sgd'")
            fields[key] = False
    # config.sae was checked against the architecture's fields when the TrainConfig was built
    sae_config = config_cls(**{**fields, **config.sae})
    torch.manual_seed(config.seed * 1000 + index)
    sae = model_cls(sae_config)
    if sae_config.subtract_b_dec or sae_config.is_transcoder:
        with torch.no_grad():  # start the decoder bias at the mean of what it writes
            sae.b_dec.copy_(mean * sae_config.resolved_output_scale)
    return sae


def estimate_and_build(config: TrainConfig, hookpoints: list[str], first: list[Block], reduce) -> dict[str, SAE]:
    """SAEs for `hookpoints`, their scales (mean norm sqrt(width)) and biases from the first batches."""
    stats = {}
    for name, (norm, mean) in batch_statistics(first, reduce).items():
        width = int(first[0][name].shape[-1])
        if not math.isfinite(norm) or norm <= 0:
            raise ValueError(f"hookpoint {name!r}: mean activation norm is {norm}; cannot normalize")
        stats[name] = (width, math.sqrt(width) / norm, mean)
    saes = {}
    for name in hookpoints:
        saes[name] = init_sae(config, name, stats, config.hookpoints.index(name))
        c = saes[name].config
        logger.info(
            "SAE for %s -> %s: d_in=%d d_out=%d d_sae=%d", name, c.write_hookpoint, c.d_in, c.resolved_d_out, c.d_sae
        )
    return saes


class SAEBundle(nn.Module):
    """All SAEs of a process as one module (one DDP wrapper, one optimizer)."""

    def __init__(self, saes: dict[str, SAE]):
        super().__init__()
        self.names = list(saes)
        self.saes = nn.ModuleList(saes[n] for n in self.names)

    def forward(self, batch: dict[str, Tensor], dead_masks: dict[str, Tensor]) -> dict:
        return {
            name: sae(
                batch[name],
                target=target(batch, sae),
                compute_losses=True,
                dense_features=False,
                dead_mask=dead_masks[name],
            )  # fmt: skip
            for name, sae in zip(self.names, self.saes, strict=True)
        }

    def items(self) -> Iterator[tuple[str, SAE]]:
        return zip(self.names, self.saes, strict=True)


def target(batch: dict[str, Tensor], sae: SAE) -> Tensor | None:
    """A transcoder's training target: the batch's activation at its write point (harvested under the
    recipe's hookpoints_out name, which the trainer stores as `hookpoint_out`); None for an SAE."""
    return batch[sae.config.hookpoint_out] if sae.config.hookpoint_out else None
