"""Feature absorption on the first-letter task, as SAEBench measures it, on any Hugging Face causal LM.

Chanin et al. 2024, "A is for Absorption" (arXiv 2409.14507, Sec. 4), and SAEBench (Karvonen et al.
2025, arXiv 2503.09532, Sec. 3.3 and App. on absorption). The steps, each as SAEBench does them:

1. Words: the model's own single-token alphabetic vocabulary (tokens that are letters only, with an
   optional leading space), split train/test.
2. Prompts: ICL style, 10 random other words as "{word} has the first letter: W" lines, then
   "{word} has the first letter:"; activations are read at the hookpoint at the word's token.
3. Ground truth: 26 one-vs-rest logistic probes on the LLM's raw activations; letters whose probe test
   F1 is below 0.6 are skipped (SAEBench's `min_GT_probe_f1`).
4. Main latents: k-sparse probes on the SAE's latents for k = 1..10; the main latents of a letter
   are those of the largest k reached while each step raises the test F1 by more than 0.03
   (SAEBench's `f1_jump_threshold` feature-split rule). SAEBench picks the k latents by the largest
   weights of an L1-regularized probe; here they are the k latents whose mean activation rises most
   on the letter (`top_k_mean_diff(signed=True)`, SAEBench's sparse-probing selection).
5. On each test word of the letter the ground-truth probe gets right (a probe true positive), with
   p the unit probe direction, a = x . p and a latent's projection f_i (d_i . p) (activation times
   decoder dot probe, SAEBench's "probe projection" after it folds the decoder norms):
   - absorption fraction: absorbers are non-main latents with cos(d_i, p) >= 0.1 and a positive
     projection, the top 3 of them summed (A); with M the main latents' summed projection: 0 if
     M >= a or A / a < 0.4, 1 if M <= 0, else min(A, a - M) / (min(A, a - M) + M);
   - full absorption: every main latent has |f| < 1e-8, the top-projecting latent has
     cos >= 0.025 and carries >= 0.4 of a (and a >= 0).
   (thresholds: SAEBench `FeatureAbsorptionCalculator`, sae_bench/evals/absorption/
   feature_absorption_calculator.py). Per letter both are averaged over its probe true positives;
   the overall scores are the means over letters.

SAEBench recommends models of >= 1B parameters (its config says >= 2B) and SAEs of >= 16k latents
for this metric: first-letter features are only reliably linear in larger models. On SmolLM2-135M
and small SAEs the numbers are a small-model measurement, not comparable to published ones.
"""

import logging
import os
import random
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import Harvester
from ..plots import figure, save_png
from ..saes.base import SAE
from .probes import LogisticProbe, fit_k_sparse_probe, fit_probe, train_test_split

logger = logging.getLogger(__name__)

__all__ = [
    "AbsorptionConfig",
    "AbsorptionResult",
    "LetterAbsorption",
    "absorption",
    "absorption_from_activations",
    "absorption_scores",
    "alphabetic_tokens",
    "first_letter_prompt",
    "main_latents",
    "plot_absorption",
    "word_activations",
]

LETTERS = string.ascii_lowercase


@dataclass
class AbsorptionConfig:
    """SAEBench's defaults (AbsorptionEvalConfig and FeatureAbsorptionCalculator)."""

    prompt_template: str = "{word} has the first letter:"
    icl_examples: int = 10
    max_words: int | None = None  # sample this many vocabulary words (None: all, as SAEBench)
    test_fraction: float = 0.2
    max_k: int = 10
    f1_jump_threshold: float = 0.03
    min_probe_f1: float = 0.6
    absorption_cos_threshold: float = 0.1
    full_absorption_cos_threshold: float = 0.025
    projection_threshold: float = 0.4
    max_absorbing_latents: int = 3
    batch_size: int = 32
    seed: int = 42


@dataclass
class LetterAbsorption:
    letter: str
    main_latents: list[int]
    probe_f1: float
    num_probe_true_positives: int
    mean_absorption_fraction: float
    full_absorption_rate: float
    num_full_absorption: int


@dataclass
class AbsorptionResult:
    """Means over the scored letters; `skipped` letters had too few words or a weak probe."""

    mean_absorption_fraction: float
    mean_full_absorption: float
    mean_num_split_latents: float
    letters: list[LetterAbsorption]
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ---- the scoring itself, on given activations ---------------------------------------------------


def absorption_scores(
    acts: Tensor, latents: Tensor, decoder: Tensor, direction: Tensor, main: Sequence[int], config: AbsorptionConfig
) -> tuple[Tensor, Tensor]:
    """(absorption fraction (N,), full absorption (N,) bool) of N probe-true-positive tokens.

    acts (N, d) LLM activations, latents (N, F) their SAE features, decoder (F, d) each latent's
    decoder vector in activation units, direction (d,) the letter's probe direction.
    """
    p = direction / direction.norm()
    cos = nn.functional.cosine_similarity(decoder, p[None], dim=1)  # (F,)
    proj_NF = latents * (decoder @ p)  # each latent's share of the probe projection
    a_N = acts @ p
    is_main = torch.zeros(decoder.shape[0], dtype=torch.bool)
    is_main[list(main)] = True
    main_N = proj_NF[:, is_main].sum(1)
    candidates_NF = torch.where(~is_main & (cos >= config.absorption_cos_threshold) & (proj_NF > 0), proj_NF, 0.0)
    top = min(config.max_absorbing_latents, candidates_NF.shape[1])
    absorbed_N = candidates_NF.topk(top, dim=1).values.sum(1)
    capped = torch.minimum(absorbed_N, a_N - main_N)
    fraction = (capped / (capped + main_N)).clamp(0, 1)
    fraction = torch.where(main_N <= 0, 1.0, fraction)
    fraction = torch.where((main_N >= a_N) | (absorbed_N / a_N < config.projection_threshold), 0.0, fraction)
    top_proj, top_idx = proj_NF.max(1)
    full = (
        (latents[:, is_main].abs() < 1e-8).all(1)
        & (cos[top_idx] >= config.full_absorption_cos_threshold)
        & (a_N >= 0)
        & (top_proj / a_N >= config.projection_threshold)
    )
    return fraction, full


def _f1(pred: Tensor, y: Tensor) -> float:
    tp = float((pred.bool() & y.bool()).sum())
    denom = float(pred.sum() + y.sum())
    return 2 * tp / denom if denom else 0.0


def main_latents(
    latents_train: Tensor, y_train: Tensor, latents_test: Tensor, y_test: Tensor, config: AbsorptionConfig
) -> list[int]:
    """The letter's main latents by SAEBench's feature-split rule on k-sparse probes (k = 1..max_k)."""
    best, chosen = -100.0, []
    for k in range(1, min(config.max_k, latents_train.shape[1]) + 1):
        probe = fit_k_sparse_probe(latents_train, y_train, k, signed=True)
        f1 = _f1(probe.predict(latents_test), y_test)
        if f1 <= best + config.f1_jump_threshold:
            break
        best, chosen = f1, probe.features.tolist()
    return chosen


# ---- words, prompts and activations -------------------------------------------------------------


def alphabetic_tokens(tokenizer) -> list[tuple[int, str]]:
    """(token id, text) of every vocabulary token made of ASCII letters only (one leading space allowed)."""
    out = []
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        text = tokenizer.convert_tokens_to_string([token])
        bare = text[1:] if text.startswith(" ") else text
        if bare and all(c in string.ascii_letters for c in bare):
            out.append((token_id, text))
    return out


def first_letter_prompt(word: str, examples: Sequence[str], template: str) -> str:
    """SAEBench's ICL prompt: a newline, then one "{example} has the first letter: X" line each."""
    lines = [template.format(word=ex) + " " + ex.strip()[0].upper() for ex in examples]
    return "\n" + "\n".join([*lines, template.format(word=word)])


@torch.no_grad()
def _prompt_activations(model, tokenizer, hookpoint: str, words: list[tuple[int, str]], config: AbsorptionConfig):
    """Activations (N, d) at each word's token and the indices of the words kept (one token in context)."""
    rng = random.Random(config.seed)
    vocab = [w for _, w in words]
    harvest = Harvester(model, [hookpoint])
    rows, kept = [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in tqdm(range(0, len(words), config.batch_size), desc="absorption: word activations"):
        batch = words[start : start + config.batch_size]
        ids, positions = [], []
        for i, (token_id, word) in enumerate(batch, start):
            examples = [w for w in rng.sample(vocab, config.icl_examples + 1) if w != word][: config.icl_examples]
            prompt = first_letter_prompt(word, examples, config.prompt_template)
            suffix = len(config.prompt_template.split("{word}", 1)[1])
            prefix = tokenizer(prompt[: len(prompt) - suffix], add_special_tokens=True)["input_ids"]
            full = tokenizer(prompt, add_special_tokens=True)["input_ids"]
            if full[: len(prefix)] == prefix and prefix[-1] == token_id:
                ids.append(full)
                positions.append(len(prefix) - 1)
                kept.append(i)
        if not ids:
            continue
        width = max(map(len, ids))
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
        acts = harvest(input_ids, attention_mask=mask)[hookpoint]
        rows.append(acts[torch.arange(len(ids)), torch.tensor(positions)].float())
    if not rows:
        raise ValueError("no vocabulary word stayed a single token inside its prompt")
    return torch.cat(rows), kept


@torch.no_grad()
def _decoder_vectors(sae: SAE, chunk: int = 4096) -> Tensor:
    """(F, d) what each latent at activation 1 adds to the reconstruction, in the activation's units."""
    dtype = next(sae.parameters()).dtype
    zero = sae.decode(torch.zeros(1, sae.config.d_sae, dtype=dtype))
    rows = []
    for start in range(0, sae.config.d_sae, chunk):
        eye = torch.eye(sae.config.d_sae, dtype=dtype)[start : start + chunk]
        rows.append((sae.decode(eye) - zero).float())
    return torch.cat(rows)


@torch.no_grad()
def _encode(sae: SAE, acts: Tensor, chunk: int = 1024) -> Tensor:
    dtype = next(sae.parameters()).dtype
    return torch.cat([sae.encode(acts[i : i + chunk].to(dtype)).float() for i in range(0, len(acts), chunk)])


def _letter(
    c: int, probe: LogisticProbe, acts: Tensor, latents: Tensor, labels: Tensor, split, decoder, config
) -> LetterAbsorption | str:
    """One letter's scores, or the reason it is skipped."""
    train, test = split
    y = labels == c
    if int(y[train].sum()) < 2 or int(y[test].sum()) < 1:
        return f"{int(y[train].sum())} train and {int(y[test].sum())} test words"
    fires = probe.logits(acts)[:, c] > 0
    f1 = _f1(fires[test], y[test])
    if f1 < config.min_probe_f1:
        return f"ground-truth probe F1 {f1:.3f} < {config.min_probe_f1}"
    main = main_latents(latents[train], y[train].long(), latents[test], y[test].long(), config)
    tp = test[(y & fires)[test]]
    fraction, full = absorption_scores(acts[tp], latents[tp], decoder, probe.directions()[c], main, config)
    return LetterAbsorption(
        letter=LETTERS[c],
        main_latents=main,
        probe_f1=f1,
        num_probe_true_positives=len(tp),
        mean_absorption_fraction=float(fraction.mean()) if len(tp) else 0.0,
        full_absorption_rate=float(full.float().mean()) if len(tp) else 0.0,
        num_full_absorption=int(full.sum()),
    )


def absorption_from_activations(
    acts: Tensor, labels: Tensor, sae: SAE, config: AbsorptionConfig | None = None
) -> AbsorptionResult:
    """Steps 3-5 on given word activations (N, d) with first-letter labels (N,) in 0..25."""
    config = config or AbsorptionConfig()
    split = train_test_split(len(acts), config.test_fraction, config.seed, labels)
    probe = fit_probe(acts[split[0]], labels[split[0]], num_classes=len(LETTERS), standardize=False)
    latents, decoder = _encode(sae, acts), _decoder_vectors(sae)
    letters, skipped = [], {}
    for c in tqdm(range(len(LETTERS)), desc="absorption: letters"):
        out = _letter(c, probe, acts, latents, labels, split, decoder, config)
        if isinstance(out, str):
            skipped[LETTERS[c]] = out
        else:
            letters.append(out)
    if not letters:
        raise ValueError(f"no letter could be scored: {skipped}")
    return AbsorptionResult(
        mean_absorption_fraction=sum(r.mean_absorption_fraction for r in letters) / len(letters),
        mean_full_absorption=sum(r.full_absorption_rate for r in letters) / len(letters),
        mean_num_split_latents=sum(len(r.main_latents) for r in letters) / len(letters),
        letters=letters,
        skipped=skipped,
        settings=asdict(config),
    )


def absorption(
    model: nn.Module, tokenizer, sae: SAE, hookpoint: str | None = None, config: AbsorptionConfig | None = None
) -> AbsorptionResult:
    """Feature absorption of `sae` at `hookpoint` (default: the SAE's own) of any HF causal LM."""
    config = config or AbsorptionConfig()
    hookpoint = hookpoint or sae.config.hookpoint
    if hookpoint is None:
        raise ValueError(f"{type(sae).__name__} has no config.hookpoint; pass hookpoint='model.layers.N'")
    acts, labels = word_activations(model, tokenizer, hookpoint, config)
    result = absorption_from_activations(acts, labels, sae, config)
    result.settings.update(hookpoint=hookpoint, num_words=len(labels))
    return result


def word_activations(model: nn.Module, tokenizer, hookpoint: str, config: AbsorptionConfig) -> tuple[Tensor, Tensor]:
    """Steps 1-2: the LLM's activations (N, d) at each vocabulary word's token in its ICL prompt and the
    words' first-letter labels (N,). They do not depend on the SAE: compute them once for several."""
    words = alphabetic_tokens(tokenizer)
    if len(words) <= config.icl_examples:
        raise ValueError(f"the tokenizer has only {len(words)} alphabetic tokens, fewer than the ICL examples")
    if config.max_words is not None and config.max_words < len(words):
        words = sorted(random.Random(config.seed).sample(words, config.max_words))
    acts, kept = _prompt_activations(model, tokenizer, hookpoint, words, config)
    logger.info("absorption: %d of %d words stay one token in their prompt", len(kept), len(words))
    return acts, torch.tensor([LETTERS.index(words[i][1].strip()[0].lower()) for i in kept])


def plot_absorption(result: AbsorptionResult, path: str | os.PathLike, title: str = "feature absorption") -> Path:
    """Per-letter bars: mean absorption fraction and full-absorption rate; the means in the title."""
    fig = figure(8, 3.5)
    ax = fig.add_subplot()
    xs = range(len(result.letters))
    ax.bar(
        [x - 0.2 for x in xs], [r.mean_absorption_fraction for r in result.letters], 0.4, label="absorption fraction"
    )
    ax.bar([x + 0.2 for x in xs], [r.full_absorption_rate for r in result.letters], 0.4, label="full absorption")
    ax.set_xticks(list(xs), [r.letter for r in result.letters])
    ax.set_ylim(0, 1)
    ax.set_xlabel("first letter")
    ax.set_title(
        f"{title}: mean fraction {result.mean_absorption_fraction:.3f}, full {result.mean_full_absorption:.3f}"
        f" ({len(result.skipped)} letters skipped)"
    )
    ax.legend(fontsize=7)
    return save_png(fig, path)
