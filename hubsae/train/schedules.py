"""Schedules as small pure functions of the optimizer step (nanoGPT's `get_lr` style)."""

import math

from .config import TrainConfig


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, flat, then decay."""
    total = config.steps
    if config.lr_warmup_steps > 0 and step < config.lr_warmup_steps:
        return (step + 1) / config.lr_warmup_steps
    decay_start = int(config.lr_decay_start * total)
    if config.lr_decay == "none" or step < decay_start or total <= decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
    if config.lr_decay == "linear":
        shape = 1.0 - progress
    else:  # cosine
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


def sparsity_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the sparsity-loss weights: linear from ~0 to 1 over `sparsity_warmup_steps`."""
    if config.sparsity_warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / config.sparsity_warmup_steps)


def threshold_window_index(step: int, micro: int, config: TrainConfig) -> int | None:
    """Index of this micro-batch in the late window over which BatchTopK-style inference thresholds
    are averaged (the last 10% of the steps, at most 1,000), or None before it."""
    window = max(1, min(config.steps // 10, 1000))
    start = config.steps - window
    return (step - start) * config.grad_accum_steps + micro if step >= start else None
