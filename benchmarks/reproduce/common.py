"""Shared pieces of the small reproductions: one training loop, metrics, cached SmolLM2 activations.

`train` is the package Trainer's step in a few lines (fused AdamW from `hubsae.train.trainer`,
the warmup + cosine schedule through `hubsae.train.schedules.lr_factor`, the dead-latent window
for AuxK, BatchTopK's late-window inference threshold, decoder-gradient projection and
renormalization), on an in-memory tensor: every method and arm is trained the same way, each
token once, and the scripts can time the optimizer steps alone and record learning curves.
"""

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hubsae.eval.metrics import decoder_max_cosine
from hubsae.train.config import TrainConfig
from hubsae.train.schedules import lr_factor, threshold_window_index
from hubsae.train.trainer import adamw

# The shared 2-core boxes these run on are oversubscribed; one intra-op thread is ~10x faster there.
torch.set_num_threads(int(os.environ.get("HUBSAE_REPRO_THREADS", "1")))
CACHE = Path(os.environ.get("HUBSAE_REPRO_CACHE", Path.home() / ".cache" / "hubsae-repro"))


def fvu(sae, data: Tensor, batch: int = 4096) -> float:
    """Pooled FVU, E||x - x_hat||^2 / E||x - E[x]||^2 (SAELens `explained_variance`)."""
    err = 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch):
            x = data[start : start + batch]
            err += (x - sae(x).reconstruction).pow(2).sum().item()
    return err / (data - data.mean(0)).pow(2).sum().item()


def mean_l0(sae, data: Tensor) -> float:
    with torch.no_grad():
        return (sae.encode(data[:4096]) != 0).float().sum(-1).mean().item()


def mean_nn_cosine(sae) -> float:
    """OrtSAE's MeanCosSim: mean over latents of the largest cosine to another decoder row."""
    return decoder_max_cosine(sae.W_dec.detach()).mean().item()


@dataclass
class Run:
    """What `train` measured: wall-clock of the optimizer steps only, the fraction of latents that
    fired in the last 10% of the steps, how many steps AuxK had dead latents to work on, and the
    learning curve (tokens, train seconds so far, held-out EV) at the requested points."""

    seconds: float
    tokens: int
    alive: float
    auxk_steps: int
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    ev: float = float("nan")  # held-out EV on the whole test split, set by the caller
    l0: float = float("nan")


def schedule(steps: int, batch: int, lr: float, warmup: float = 0.1, min_lr: float = 1e-6) -> TrainConfig:
    """KronSAE's schedule (arXiv 2505.22255 App. A.1): linear warmup over the first 10% of steps,
    then cosine to min lr 1e-6; expressed as the package's TrainConfig so `lr_factor` reads it."""
    return TrainConfig(
        dataset="in-memory",  # never read: the config only carries the schedule
        max_tokens=steps * batch,
        batch_size=batch,
        lr=lr,
        lr_warmup_steps=max(1, int(warmup * steps)),
        lr_decay="cosine",
        lr_decay_start=warmup,
        min_lr_ratio=min_lr / lr,
    )


def train(
    sae,
    data: Tensor,
    tokens: int,
    batch: int = 1024,
    lr: float = 8e-4,
    seed: int = 0,
    extra_loss: Callable[[int], Tensor | None] | None = None,
    dead_fraction: float = 0.1,
    curve_at: Sequence[int] = (),
    curve_data: Tensor | None = None,
) -> Run:
    """AdamW (the Trainer's fused one) on `sae(x).loss` (+ `extra_loss(step)`) with warmup + cosine,
    each token seen once (a seeded permutation of `data`, no repeats); the Trainer's dead window
    (here `dead_fraction` of the run, in steps) and BatchTopK late-window threshold."""
    steps = tokens // batch
    if steps * batch > len(data):
        raise ValueError(f"{tokens} tokens asked for but the data has {len(data)}: tokens would repeat")
    cfg = schedule(steps, batch, lr)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)[: steps * batch].reshape(steps, batch)
    opt = adamw([{"params": list(sae.parameters()), "lr": lr}], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg))
    dead_window = max(1, int(dead_fraction * steps))
    last_fired = torch.zeros(sae.config.d_sae, dtype=torch.long)
    marks = {t // batch for t in curve_at}
    run = Run(0.0, steps * batch, 0.0, 0)
    sae.train()
    for step in tqdm(range(steps), desc=type(sae).__name__, leave=False, mininterval=30):
        start = time.perf_counter()
        if hasattr(sae, "threshold_window_index"):
            sae.threshold_window_index = threshold_window_index(step, 0, cfg)
        dead = (step - last_fired) > dead_window
        run.auxk_steps += int(dead.any())
        out = sae(data[order[step]], compute_losses=True, dense_features=False, dead_mask=dead)
        loss = out.loss
        extra = extra_loss(step) if extra_loss is not None else None
        loss = loss if extra is None else loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sched.step()
        sae.set_decoder_norm_to_unit_norm()
        last_fired[out.active_latents(sae.config.d_sae)] = step
        run.seconds += time.perf_counter() - start
        if step + 1 in marks and curve_data is not None:
            run.curve.append(((step + 1) * batch, run.seconds, 1 - fvu(sae.eval(), curve_data)))
            sae.train()
    sae.eval()
    run.alive = ((steps - 1 - last_fired) <= max(1, steps // 10)).float().mean().item()  # fired in the last 10%
    return run


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """'mean ± sd' over seeds (sample sd; '± 0' for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


# ---- SmolLM2 activations ------------------------------------------------------------------------

HOOKPOINT = "model.layers.10"


def smollm2_activations(n_tokens: int, cache: Path | None = None) -> Tensor:
    """Residual-stream activations after `model.layers.10` of SmolLM2-135M-Instruct on the
    Shakespeare corpus (`corpus:shakespeare`), (n_tokens, 576) float32.

    Harvested once into a hubsae activation cache (`hubsae.data.cache`, the Trainer's
    `activation_cache`) under $HUBSAE_REPRO_CACHE and read back by every script, arm and seed.
    BOS (the attention sink, with a huge norm) is excluded as a special token.
    """
    from hubsae.data.cache import cache_blocks, read_index
    from hubsae.train.build import ensure_cache

    folder = cache or CACHE / f"smollm2_shakespeare_L10_{n_tokens}"
    cfg = TrainConfig(
        dataset="corpus:shakespeare",
        hookpoints=[HOOKPOINT],
        activation_cache=str(folder),
        max_tokens=n_tokens,
        batch_size=1,
        model_batch_size=16,
        progress_bar=False,
    )
    if not (folder / "index.json").is_file():
        from hubsae.llm import load_causal_lm

        ensure_cache(cfg, *load_causal_lm())
    blocks = [block[HOOKPOINT] for _, block in cache_blocks(folder, [HOOKPOINT])(0, 0)]
    acts = torch.cat(blocks)[:n_tokens].float()
    if len(acts) < n_tokens:
        have = read_index(folder)["n_tokens"]
        raise ValueError(f"activation cache {folder} holds {have} tokens, fewer than the {n_tokens} asked for")
    return acts


def split(data: Tensor, test_fraction: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(data) * test_fraction)
    return data[perm[n_test:]], data[perm[:n_test]]


def scale_to_sqrt_d(train_data: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """One global factor so that E||x|| = sqrt(d) on the training data (Anthropic's convention)."""
    factor = train_data.shape[1] ** 0.5 / train_data.norm(dim=-1).mean()
    return tuple(t * factor for t in (train_data, *others))


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
