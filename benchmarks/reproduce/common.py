"""Shared pieces of the small reproductions: a plain training loop, metrics, SmolLM2 activations.

The loops here are deliberately minimal (Adam, fixed lr, AuxK dead-latent window, decoder
renormalization where the architecture asks for it) so that every comparison trains each method
the same way. They do not use the package's Trainer on purpose: these scripts pin the papers'
math, and must keep running whatever the Trainer's defaults become.
"""

import glob
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from hubsae.eval.metrics import decoder_max_cosine

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


def train(
    sae,
    data: Tensor,
    steps: int,
    batch: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    extra_loss: Callable[[int], Tensor | None] | None = None,
    dead_window: int = 200,
) -> float:
    """Adam on `sae(x).loss` (+ `extra_loss(step)`); returns the wall-clock seconds spent."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    last_fired = torch.zeros(sae.config.d_sae, dtype=torch.long)
    sae.train()
    start = time.perf_counter()
    for step in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        dead = (step - last_fired) > dead_window
        out = sae(x, dead_mask=dead)
        loss = out.loss
        if extra_loss is not None:
            extra = extra_loss(step)
            loss = loss if extra is None else loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        last_fired[(out.features != 0).any(0)] = step
    sae.eval()
    return time.perf_counter() - start


# ---- SmolLM2 activations ------------------------------------------------------------------------


def _fortunes_text(max_chars: int) -> str:
    files = sorted(f for f in glob.glob("/usr/share/games/fortunes/*") if not re.search(r"\.(dat|u8)$", f))
    if not files:
        raise FileNotFoundError("no text: install the fortunes corpus first (apt-get install fortunes fortune-mod)")
    parts, total = [], 0
    for name in files:
        if os.path.isdir(name):
            continue
        text = Path(name).read_text(errors="ignore")
        parts.append(text)
        total += len(text)
        if total > max_chars:
            break
    return "\n".join(parts)[:max_chars]


class _Stop(Exception):
    pass


@torch.no_grad()
def smollm2_activations(layer: int, n_tokens: int, seq_len: int = 128) -> Tensor:
    """Residual-stream activations after `model.layers.{layer}` of SmolLM2-135M-Instruct on the
    fortunes corpus, (n_tokens, 576) float32; cached as safetensors in $HUBSAE_REPRO_CACHE.

    The forward stops after the hooked layer (a hook raises), so deeper layers cost nothing.
    The first token of each window (the attention sink, with a huge norm) is dropped.
    """
    path = CACHE / f"smollm2_L{layer}_{n_tokens}_{seq_len}.safetensors"
    if path.exists():
        return load_file(path)["acts"]
    from hubsae.llm import load_smollm2

    model, tok = load_smollm2()
    ids = tok(_fortunes_text(n_tokens * 8), return_tensors="pt").input_ids[0]
    windows = ids[: len(ids) // seq_len * seq_len].reshape(-1, seq_len)
    captured: list[Tensor] = []

    def hook(module, args, output):
        captured.append((output[0] if isinstance(output, tuple) else output)[:, 1:].reshape(-1, output_width))
        raise _Stop

    output_width = model.config.hidden_size
    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        for start in range(0, len(windows), 16):
            try:
                model(windows[start : start + 16])
            except _Stop:
                pass
            if sum(len(c) for c in captured) >= n_tokens:
                break
    finally:
        handle.remove()
    acts = torch.cat(captured)[:n_tokens].float().contiguous()
    if len(acts) < n_tokens:
        raise ValueError(f"the corpus gave only {len(acts)} tokens, fewer than the {n_tokens} asked for")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"acts": acts}, tmp)
    tmp.replace(path)  # atomic: a killed run leaves no half-written cache
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
