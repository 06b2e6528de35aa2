"""Autointerp: an LLM explains each latent from its contexts, then detection and fuzzing score the explanation.

The pipeline of delphi (Paulo et al., "Automatically Interpreting Millions of Features in Large
Language Models", arXiv 2410.13928, Sec. 3) and SAEBench (Karvonen et al., arXiv 2503.09532,
autointerp), run on any Hugging Face model through hubsae's hooks:

1. `collect_contexts`: one pass over the text. Per latent, its top-activating windows
   (`TopActivations`), a uniform sample of other firing windows from which contexts are drawn
   stratified by activation (delphi's quantile sampling), and random windows on which it does not
   fire at all (non-activating, for the scorers).
2. `explain_latent`: the explainer reads top + sampled contexts with the firing tokens marked
   `<<like this>>` (tokens >= `highlight_threshold` x the context's maximum, delphi's 0.3), each
   followed by delphi's list of the marked tokens with their activations on a 1..10 scale, and
   writes one short explanation.
3. Scorers, on held-out activating contexts and the non-activating ones, a few per prompt:
   detection (is the latent active in this context, given the explanation?) and fuzzing (are the
   marked tokens the ones it fires on? correctly marked activating contexts vs non-activating ones
   with as many random tokens marked as activating contexts mark on average, delphi's default).
   Both are balanced accuracy (TPR + TNR) / 2, delphi's `compute_classification_metrics`; answers
   that cannot be read are counted and left out, never guessed.
4. The control: the same scorers on shuffled explanations (every latent gets another latent's).
   A real explanation should beat it; one that does not carries no information about its latent.

Counts (`AutointerpConfig`): the defaults are SAEBench's (explain from 10 top + 5 sampled
contexts; score on 2 top + 2 sampled activating vs 10 random non-activating; 21-token windows,
buffer 10; an explanation of at most 30 tokens) with delphi's 5 examples per scorer prompt.
`AutointerpConfig.delphi()` gives delphi's (40 sampled contexts for explaining, 50 activating and 50
non-activating for scoring; delphi's windows are 32 tokens with the peak 3/4 in, ours stay
symmetric). SAEBench scores one prompt of 14 examples by accuracy, so its chance level is set by
the 4:10 split (an all-"no" judge gets 0.714); balanced accuracy puts chance at 0.5 for any split.
"""

import logging
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..hooks.capture import capture
from ..hooks.hookpoints import resolve_hookpoint
from ..saes.base import SAE
from .autointerp_backends import ChatBackend, TransformersChat
from .autointerp_prompts import (
    activation_line,
    explain_messages,
    mark_tokens,
    parse_explanation,
    parse_labels,
    score_messages,
)
from .autointerp_result import SCORERS, AutointerpResult, LatentInterpretation, ScoreResult
from .browser import token_strings
from .examples import TopActivations

logger = logging.getLogger(__name__)


@dataclass
class AutointerpConfig:
    """How many contexts each step sees (defaults: SAEBench's counts; `delphi()` for delphi's)."""

    n_top_explain: int = 10
    """top-activating contexts shown to the explainer (SAEBench n_top_ex_for_generation)"""
    n_sampled_explain: int = 5
    """activation-stratified sampled contexts shown to the explainer (SAEBench n_iw_sampled_ex_for_generation)"""
    n_top_score: int = 2
    """held-out top contexts the scorers see as activating (SAEBench n_top_ex_for_scoring)"""
    n_sampled_score: int = 2
    """held-out sampled contexts the scorers see as activating (SAEBench n_iw_sampled_ex_for_scoring)"""
    n_non_activating: int = 10
    """windows on which the latent does not fire, for both scorers (SAEBench n_random_ex_for_scoring)"""
    radius: int = 10
    """tokens each side of the peak: 21-token windows (SAEBench buffer)"""
    examples_per_prompt: int = 5
    """contexts per scorer prompt (delphi num_examples_per_scorer_prompt)"""
    highlight_threshold: float = 0.3
    """a token is marked when its activation >= this x the context's maximum (delphi's threshold)"""
    max_tokens_explanation: int = 30
    """length limit of the explainer's answer (SAEBench max_tokens_in_explanation)"""
    seed: int = 0

    def __post_init__(self) -> None:
        counts = {k: v for k, v in asdict(self).items() if k.startswith("n_")}
        bad = {k: v for k, v in counts.items() if not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"AutointerpConfig counts must be integers >= 0, got {bad}")
        if self.n_top_explain + self.n_sampled_explain == 0:
            raise ValueError("AutointerpConfig shows the explainer no context: set n_top_explain or n_sampled_explain")
        if self.examples_per_prompt < 1 or self.radius < 0 or self.max_tokens_explanation < 1:
            raise ValueError(
                f"AutointerpConfig needs examples_per_prompt >= 1, radius >= 0, max_tokens_explanation >= 1; got "
                f"{self.examples_per_prompt}, {self.radius}, {self.max_tokens_explanation}"
            )
        if not 0 < self.highlight_threshold <= 1:
            raise ValueError(f"AutointerpConfig.highlight_threshold must be in (0, 1], got {self.highlight_threshold}")

    @classmethod
    def delphi(cls, **overrides) -> "AutointerpConfig":
        """delphi's counts (arXiv 2410.13928; its SamplerConfig/ConstructorConfig defaults)."""
        counts = dict(n_top_explain=0, n_sampled_explain=40, n_top_score=0, n_sampled_score=50, n_non_activating=50)
        return cls(**{**counts, "radius": 16, **overrides})


@dataclass
class Context:
    """One window of text: token strings, the latent's activation on each, the index of the window's centre."""

    tokens: list[str]
    acts: list[float]
    center: int

    @property
    def peak(self) -> float:
        return max(self.acts, default=0.0)

    def marks(self, threshold: float) -> list[bool]:
        """Tokens at or above `threshold` x this context's maximum (none if it never fires)."""
        peak = self.peak
        return [peak > 0 and a >= threshold * peak for a in self.acts]


@dataclass
class LatentContexts:
    """What autointerp shows about one latent: `explain` (top first, then sampled, by peak), and for the
    scorers `activating` (held out from the explainer) and `non_activating` (the latent is 0 throughout)."""

    latent: int
    explain: list[Context]
    activating: list[Context]
    non_activating: list[Context]


def _batches(contexts: Iterable[Tensor], batch_size: int, max_contexts: int | None) -> Iterator[Tensor]:
    rows: list[Tensor] = []
    for n, ctx in enumerate(contexts):
        if max_contexts is not None and n >= max_contexts:
            break
        rows.extend(ctx.unsqueeze(0) if ctx.dim() == 1 else ctx)
        while len(rows) >= batch_size:
            yield torch.stack(rows[:batch_size])
            rows = rows[batch_size:]
    if rows:
        yield torch.stack(rows)


def _quiet_scores(feats_BTF: Tensor, keep_BT: Tensor, radius: int, gen: torch.Generator) -> Tensor:
    """Random positive scores where the whole window [t - radius, t + radius] has the latent at 0, else 0.

    Fed to a `TopActivations(sample=True)`, they make it keep a uniform sample of non-activating
    windows (the peak of the scores is a random eligible position of a random eligible sequence)."""
    fired = feats_BTF.transpose(1, 2) > 0  # (B, F, T)
    near = torch.nn.functional.max_pool1d(fired.float(), 2 * radius + 1, stride=1, padding=radius) > 0
    quiet = ~near.transpose(1, 2) & keep_BT.unsqueeze(-1)
    return quiet * (torch.rand(quiet.shape, generator=gen) + 1e-3)


@torch.no_grad()
def collect_contexts(
    model: nn.Module,
    sae: SAE,
    contexts: Iterable[Tensor],
    tokenizer,
    config: AutointerpConfig | None = None,
    *,
    latents: Sequence[int] | None = None,
    batch_size: int = 8,
    max_contexts: int | None = None,
    progress: bool = True,
) -> list[LatentContexts]:
    """Run `model` over `contexts` ((T,) token tensors, e.g. `text_contexts(...)`) and gather each latent's
    explainer and scorer contexts. `latents` (default: all) bounds memory: the collectors keep
    len(latents) x (counts) windows. A latent that never fires is left out of the result."""
    config = config or AutointerpConfig()
    chosen = list(range(sae.config.d_sae)) if latents is None else sorted(set(int(i) for i in latents))
    if not chosen or not all(0 <= i < sae.config.d_sae for i in chosen):
        raise ValueError(f"latents must be a non-empty subset of 0..{sae.config.d_sae - 1}, got {latents}")
    hookpoint = sae.config.hookpoint
    if not hookpoint:
        raise ValueError(f"{type(sae).__name__} has no config.hookpoint: set it to the module the SAE reads")
    F, r, c = len(chosen), config.radius, config
    n_top, n_sampled = c.n_top_explain + c.n_top_score, c.n_sampled_explain + c.n_sampled_score
    top = TopActivations(F, max(n_top, 1), r)
    pool = TopActivations(F, max(2 * n_sampled + n_top, 1), r, sample=True, seed=c.seed)
    quiet = TopActivations(F, max(c.n_non_activating, 1), r, sample=True, seed=c.seed + 1)
    gen = torch.Generator().manual_seed(c.seed)
    index = torch.tensor(chosen, device=sae.W_dec.device)
    resolved = [resolve_hookpoint(model, hookpoint)]
    device = next(model.parameters()).device
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    for ids in tqdm(_batches(contexts, batch_size, max_contexts), desc="autointerp contexts", disable=not progress):
        _, acts = capture(
            model, [hookpoint], lambda i=ids: model(input_ids=i.to(device), use_cache=False), True, resolved
        )
        x = acts[hookpoint].to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
        feats = sae(x, compute_losses=False).features.index_select(-1, index).float().cpu()  # (B, T, F)
        ids, keep = ids.cpu(), ~torch.isin(ids.cpu(), special)
        top.update(feats, ids, keep)
        pool.update(feats, ids, keep)
        quiet.update(_quiet_scores(feats.masked_fill(~keep.unsqueeze(-1), 0), keep, r, gen), ids)
    return _assemble(chosen, top, pool, quiet, tokenizer, config)


def _assemble(chosen, top, pool, quiet, tokenizer, config: AutointerpConfig) -> list[LatentContexts]:
    """Split each latent's windows into explainer and scorer contexts (random, seeded), decoded."""
    rng = random.Random(config.seed)
    special = set(tokenizer.all_special_ids)
    used = {t for c in (top, pool, quiet) for t in c.tokens.flatten().tolist()} - {-1}
    strings = token_strings(used, tokenizer.decode)

    def context(ex: dict, zero: bool = False) -> Context:
        start = ex["pos"] - min(ex["pos"], config.radius)  # windows are cut at the start of the sequence
        kept = [(i, t, a) for i, (t, a) in enumerate(zip(ex["tokens"], ex["acts"], strict=True)) if t not in special]
        center = next((j for j, (i, _, _) in enumerate(kept) if start + i == ex["pos"]), 0)
        return Context([strings[t] for _, t, _ in kept], [0.0 if zero else float(a) for _, _, a in kept], center)

    out = []
    for j, latent in enumerate(chosen):
        tops = top.examples(j)
        if not tops:  # never fired
            continue
        tops = tops[: config.n_top_explain + config.n_top_score]
        rng.shuffle(tops)
        seen = {ex["seq"] for ex in tops}
        sampled = _stratified([ex for ex in pool.examples(j) if ex["seq"] not in seen], config, rng)
        explain = sorted(tops[: config.n_top_explain], key=lambda e: -e["value"])
        explain += sampled[: config.n_sampled_explain]
        held_out = tops[config.n_top_explain :] + sampled[config.n_sampled_explain :]
        quiet_ex = quiet.examples(j)[: config.n_non_activating]
        out.append(
            LatentContexts(
                latent,
                [context(ex) for ex in explain],
                [context(ex) for ex in held_out],
                [context(ex, zero=True) for ex in quiet_ex],
            )
        )
    return out


def _stratified(pool: list[dict], config: AutointerpConfig, rng: random.Random) -> list[dict]:
    """n_sampled_explain + n_sampled_score contexts, one from each of that many equal strata of the pool
    sorted by peak (delphi's quantile sampling), sampled-for-explaining first; all if the pool is small."""
    n = config.n_sampled_explain + config.n_sampled_score
    pool = sorted(pool, key=lambda e: -e["value"])
    if n == 0:
        return []
    if len(pool) <= n:
        picked = pool
    else:
        bounds = [round(i * len(pool) / n) for i in range(n + 1)]
        picked = [pool[rng.randrange(lo, hi)] for lo, hi in zip(bounds, bounds[1:], strict=False)]
    rng.shuffle(picked)
    explain = sorted(picked[: config.n_sampled_explain], key=lambda e: -e["value"])
    return explain + picked[config.n_sampled_explain :]


def explain_latent(backend: ChatBackend, contexts: LatentContexts, config: AutointerpConfig) -> tuple[str, str]:
    """(explanation, the explainer's raw answer) from the latent's explainer contexts, firing tokens marked."""
    marks = [c.marks(config.highlight_threshold) for c in contexts.explain]
    excerpts = [mark_tokens(c.tokens, m) for c, m in zip(contexts.explain, marks, strict=True)]
    lines = [activation_line(c.tokens, c.acts, m) for c, m in zip(contexts.explain, marks, strict=True)]
    raw = backend.chat(explain_messages(excerpts, lines), config.max_tokens_explanation, 0.0)
    explanation = parse_explanation(raw)
    if not explanation:
        logger.warning("latent %d: no explanation in the explainer's answer %r", contexts.latent, raw[:200])
    return explanation, raw


def _fuzz_marks(ctx: Context, n_marked: int, rng: random.Random) -> list[bool]:
    """`n_marked` tokens of a non-activating context marked at random, the window's centre always among
    them (delphi does the same, so the position of a mark tells nothing)."""
    others = [i for i in range(len(ctx.tokens)) if i != ctx.center]
    chosen = {ctx.center, *rng.sample(others, min(max(n_marked - 1, 0), len(others)))}
    return [i in chosen for i in range(len(ctx.tokens))]


def scorer_samples(kind: str, contexts: LatentContexts, config: AutointerpConfig, rng: random.Random):
    """[(excerpt text, is-activating)] in random order: detection shows the contexts plain, fuzzing
    marks activating ones at their firing tokens and non-activating ones at random tokens."""
    t = config.highlight_threshold
    if kind == "detection":
        samples = [(mark_tokens(c.tokens, [False] * len(c.tokens)), True) for c in contexts.activating]
        samples += [(mark_tokens(c.tokens, [False] * len(c.tokens)), False) for c in contexts.non_activating]
    elif kind == "fuzzing":
        marks = [c.marks(t) for c in contexts.activating]
        n_marked = math.ceil(sum(map(sum, marks)) / len(marks)) if marks else 1
        samples = [(mark_tokens(c.tokens, m), True) for c, m in zip(contexts.activating, marks, strict=True)]
        samples += [(mark_tokens(c.tokens, _fuzz_marks(c, n_marked, rng)), False) for c in contexts.non_activating]
    else:
        raise ValueError(f"unknown scorer {kind!r}: use one of {SCORERS}")
    rng.shuffle(samples)
    return samples


def score_explanation(
    backend: ChatBackend, kind: str, explanation: str, contexts: LatentContexts, config: AutointerpConfig, seed: int
) -> ScoreResult:
    """Detection or fuzzing (`kind`) of `explanation` on a latent's scorer contexts, `examples_per_prompt`
    contexts per prompt; the confusion counts over readable answers, unreadable ones counted apart."""
    rng = random.Random(seed)
    samples = scorer_samples(kind, contexts, config, rng)
    tp = fn = tn = fp = unparsed = 0
    bad: list[str] = []
    for start in range(0, len(samples), config.examples_per_prompt):
        batch = samples[start : start + config.examples_per_prompt]
        answer = backend.chat(score_messages(kind, explanation, [s[0] for s in batch]), 4 * len(batch) + 8, 0.0)
        labels = parse_labels(answer, len(batch))
        if labels is None:
            unparsed += len(batch)
            if len(bad) < 3:
                bad.append(answer[:200])
            continue
        for (_, active), said in zip(batch, labels, strict=True):
            tp, fn = tp + (active and said), fn + (active and not said)
            tn, fp = tn + (not active and not said), fp + (not active and said)
    return ScoreResult.from_counts(tp, fn, tn, fp, unparsed, bad)


def derangement(n: int, rng: random.Random) -> list[int]:
    """A permutation p of range(n) with p[i] != i for every i (n >= 2): a random cycle."""
    if n < 2:
        raise ValueError(f"a shuffled control needs at least 2 latents, got {n}")
    order = list(range(n))
    rng.shuffle(order)
    p = [0] * n
    for a, b in zip(order, order[1:] + order[:1], strict=True):
        p[a] = b
    return p


def run_autointerp(
    contexts: Sequence[LatentContexts],
    explainer: ChatBackend | None = None,
    scorer: ChatBackend | None = None,
    config: AutointerpConfig | None = None,
    *,
    n_latents: int | None = None,
    explanations: dict[int, str] | None = None,
    progress: bool = True,
) -> AutointerpResult:
    """Explain each latent (or use the given `explanations`), score with detection and fuzzing, and score
    the shuffled control (needs >= 2 latents). `explainer` defaults to the embedded SmolLM2 (a weak one:
    see `TransformersChat`), `scorer` to the explainer. `n_latents` picks that many at random (seeded),
    as SAEBench samples live latents."""
    config = config or AutointerpConfig()
    rng = random.Random(config.seed)
    chosen = [c for c in contexts if c.explain]
    if n_latents is not None and n_latents < len(chosen):
        chosen = sorted(rng.sample(chosen, n_latents), key=lambda c: c.latent)
    if not chosen:
        raise ValueError("run_autointerp got no latent with contexts: did any latent fire on the text?")
    if explainer is None and (explanations is None or scorer is None):
        explainer = TransformersChat()
    scorer = scorer or explainer
    results = []
    for c in tqdm(chosen, desc="explaining", disable=not progress):
        given = (explanations or {}).get(c.latent)
        text, raw = (given, given) if given is not None else explain_latent(explainer, c, config)
        results.append(LatentInterpretation(c.latent, text, raw, {}))
    perm = derangement(len(chosen), rng) if len(chosen) > 1 else None
    for i, (c, li) in enumerate(tqdm(list(zip(chosen, results, strict=True)), desc="scoring", disable=not progress)):
        seed = config.seed + c.latent
        li.scores = {k: score_explanation(scorer, k, li.explanation, c, config, seed) for k in SCORERS}
        if perm is not None:
            other = results[perm[i]]
            li.shuffled_from = other.latent
            li.shuffled_scores = {k: score_explanation(scorer, k, other.explanation, c, config, seed) for k in SCORERS}
    name = explainer.name if explainer is not None else "given"
    result = AutointerpResult(results, name, scorer.name, asdict(config))
    logger.info("autointerp: %s", result.summary())
    return result


def autointerp(
    model: nn.Module,
    tokenizer,
    sae: SAE,
    contexts: Iterable[Tensor],
    explainer: ChatBackend | None = None,
    scorer: ChatBackend | None = None,
    config: AutointerpConfig | None = None,
    *,
    latents: Sequence[int] | None = None,
    n_latents: int | None = None,
    batch_size: int = 8,
    max_contexts: int | None = None,
    progress: bool = True,
) -> AutointerpResult:
    """`collect_contexts` then `run_autointerp`: explanations, detection, fuzzing and the shuffled control
    for `n_latents` random firing latents among `latents` (default: all)."""
    config = config or AutointerpConfig()
    found = collect_contexts(
        model, sae, contexts, tokenizer, config,
        latents=latents, batch_size=batch_size, max_contexts=max_contexts, progress=progress,
    )  # fmt: skip
    return run_autointerp(found, explainer, scorer, config, n_latents=n_latents, progress=progress)
