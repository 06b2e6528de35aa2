"""Sparse probing, as SAEBench measures it: how much of a labelled concept k SAE latents carry.

Karvonen et al. 2025 (SAEBench, arXiv 2503.09532, Sec. 3.4; after Gurnee et al. 2023, arXiv
2305.01610): each text is one example; its activations at the hookpoint, and its SAE latents
(encoded per token), are mean-pooled over the text's tokens (special tokens left out), as SAEBench
does. Each class is a binary one-vs-rest task with as many negatives as positives (drawn at random,
as SAEBench does), split train/test. Per task:
- a probe on the full LLM activation (the ceiling a linear reader of the residual reaches),
- a probe on all SAE latents,
- for each k, a probe on the k latents whose train means differ most between the classes
  (`top_k_mean_diff`, SAEBench's selection);
accuracy on the held-out split, averaged over the tasks. The data comes from `hubsae.data.labelled`
(source-code language, fortunes category), which exist offline.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import Harvester
from ..data.labelled import LabelledTexts
from ..plots import figure, save_png
from ..saes.base import SAE
from .probes import accuracy, fit_k_sparse_probe, fit_probe, train_test_split

logger = logging.getLogger(__name__)

__all__ = [
    "ProbingConfig",
    "ProbingResult",
    "plot_probing",
    "pool_features",
    "pooled_features",
    "probe_tasks",
    "sparse_probing",
    "sparse_probing_from_activations",
    "text_activations",
]


@dataclass
class ProbingConfig:
    ks: tuple[int, ...] = (1, 2, 5, 10, 20)
    test_fraction: float = 0.2
    max_tokens: int = 128  # SAEBench truncates each text to 128 tokens
    batch_size: int = 8
    l2: float = 1e-3
    seed: int = 0


@dataclass
class ProbingResult:
    """Mean held-out accuracy over the one-vs-rest tasks; `per_class` has each task's numbers."""

    classes: list[str]
    llm_accuracy: float
    sae_accuracy: float
    top_k_accuracy: dict[int, float]
    per_class: dict[str, dict] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def pooled_features(
    model: nn.Module, tokenizer, sae: SAE, hookpoint: str, texts: Sequence[str], config: ProbingConfig
) -> tuple[Tensor, Tensor]:
    """(N, d) mean activation and (N, F) mean SAE latents of each text over its non-special tokens."""
    return pool_features(text_activations(model, tokenizer, hookpoint, texts, config), sae)


@torch.no_grad()
def text_activations(
    model: nn.Module, tokenizer, hookpoint: str, texts: Sequence[str], config: ProbingConfig
) -> list[Tensor]:
    """Per text, the activations (T_i, d) of its non-special tokens (truncated to `max_tokens`). They do
    not depend on the SAE: compute them once and `pool_features` them for each SAE."""
    harvest = Harvester(model, [hookpoint])
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for start in tqdm(range(0, len(texts), config.batch_size), desc="probing: text activations"):
        batch = [
            tokenizer(t, truncation=True, max_length=config.max_tokens)["input_ids"]
            for t in texts[start : start + config.batch_size]
        ]
        width = max(map(len, batch))
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in batch])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch])
        acts_BTD = harvest(ids, attention_mask=mask)[hookpoint].float()
        keep_BT = mask.bool() & ~torch.isin(ids, special)
        if (keep_BT.sum(1) == 0).any():
            raise ValueError(f"a text in batch {start // config.batch_size} has no ordinary token after tokenizing")
        out.extend(acts_BTD[b][keep_BT[b]] for b in range(len(batch)))
    return out


@torch.no_grad()
def pool_features(activations: Sequence[Tensor], sae: SAE) -> tuple[Tensor, Tensor]:
    """(N, d) mean activation and (N, F) mean SAE latents of each text's (T_i, d) token activations."""
    dtype = next(sae.parameters()).dtype
    resid = torch.stack([a.mean(0) for a in activations])
    latents = torch.stack([sae.encode(a.to(dtype)).float().mean(0) for a in activations])
    return resid, latents


def _balanced_task(labels: Tensor, c: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices of class c and as many random others, and their 0/1 labels (SAEBench's binary task)."""
    pos = torch.nonzero(labels == c).flatten()
    neg = torch.nonzero(labels != c).flatten()
    neg = neg[torch.randperm(len(neg), generator=gen)[: len(pos)]]
    idx = torch.cat([pos, neg])
    return idx, (labels[idx] == c).long()


def probe_tasks(
    resid: Tensor, latents: Tensor, labels: Tensor, classes: Sequence[str], config: ProbingConfig
) -> ProbingResult:
    """Every one-vs-rest task on pooled features (N, d) and (N, F) with labels (N,) into `classes`."""
    labels = torch.as_tensor(labels)
    if not len(resid) == len(latents) == len(labels):
        raise ValueError(f"{len(resid)} activations, {len(latents)} latent rows and {len(labels)} labels")
    ks = [k for k in config.ks if k <= latents.shape[1]]
    gen = torch.Generator().manual_seed(config.seed)
    per_class = {}
    for c, name in enumerate(tqdm(classes, desc="probing: tasks")):
        if int((labels == c).sum()) < 4:
            raise ValueError(f"class {name!r} has {int((labels == c).sum())} examples; a task needs at least 4")
        idx, y = _balanced_task(labels, c, gen)
        train, test = train_test_split(len(idx), config.test_fraction, config.seed, y)
        x_r, x_s = resid[idx], latents[idx]
        row = {
            "llm": accuracy(fit_probe(x_r[train], y[train], l2=config.l2), x_r[test], y[test]),
            "sae": accuracy(fit_probe(x_s[train], y[train], l2=config.l2), x_s[test], y[test]),
        }
        for k in ks:
            probe = fit_k_sparse_probe(x_s[train], y[train], k, l2=config.l2)
            row[f"k{k}"] = accuracy(probe, x_s[test], y[test])
            row[f"k{k}_latents"] = probe.features.tolist()
        row["examples"] = len(idx)
        per_class[name] = row

    def mean(key: str) -> float:
        return sum(r[key] for r in per_class.values()) / len(per_class)

    return ProbingResult(
        classes=list(classes),
        llm_accuracy=mean("llm"),
        sae_accuracy=mean("sae"),
        top_k_accuracy={k: mean(f"k{k}") for k in ks},
        per_class=per_class,
        settings=asdict(config),
    )


def sparse_probing(
    model: nn.Module,
    tokenizer,
    sae: SAE,
    data: LabelledTexts,
    hookpoint: str | None = None,
    config: ProbingConfig | None = None,
) -> ProbingResult:
    """Sparse probing of `sae` at `hookpoint` (default: the SAE's own) on one labelled dataset."""
    config = config or ProbingConfig()
    hookpoint = hookpoint or sae.config.hookpoint
    if hookpoint is None:
        raise ValueError(f"{type(sae).__name__} has no config.hookpoint; pass hookpoint='model.layers.N'")
    activations = text_activations(model, tokenizer, hookpoint, data.texts, config)
    return sparse_probing_from_activations(activations, sae, data, config, hookpoint)


def sparse_probing_from_activations(
    activations: Sequence[Tensor], sae: SAE, data: LabelledTexts, config: ProbingConfig, hookpoint: str | None = None
) -> ProbingResult:
    """`sparse_probing` on the texts' token activations from `text_activations` (shared by several SAEs)."""
    if len(activations) != len(data):
        raise ValueError(f"{len(activations)} texts' activations for a dataset of {len(data)} texts")
    resid, latents = pool_features(activations, sae)
    result = probe_tasks(resid, latents, torch.tensor(data.labels), data.classes, config)
    result.settings.update(hookpoint=hookpoint, num_texts=len(data), pooling="mean over non-special tokens")
    return result


def plot_probing(results: dict[str, ProbingResult], path: str | os.PathLike, title: str = "sparse probing") -> Path:
    """Held-out accuracy against k (log axis), one line per dataset, the full-SAE and LLM probes dashed."""
    fig = figure(6, 3.8)
    ax = fig.add_subplot()
    for i, (name, result) in enumerate(results.items()):
        color = f"C{i}"
        ks = sorted(result.top_k_accuracy)
        ax.plot(ks, [result.top_k_accuracy[k] for k in ks], "o-", color=color, label=f"{name}: top-k latents")
        ax.axhline(result.sae_accuracy, color=color, ls="--", lw=1, label=f"{name}: all latents")
        ax.axhline(result.llm_accuracy, color=color, ls=":", lw=1, label=f"{name}: LLM activation")
    ax.set_xscale("log")
    ax.set_xlabel("k (latents in the probe)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0.4, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_png(fig, path)
