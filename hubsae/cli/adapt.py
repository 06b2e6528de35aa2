"""`hubsae adapt RECIPE.yaml`: train LoRA adapters on the LLM around a frozen, spliced SAE and save
them (peft format) next to the SAE."""

import itertools
import json
import logging

import torch

from ..adapt import AdaptRecipe, adapt_lora, save_adapted
from ..auto import AutoSAE
from ..data import TextSource, contexts
from ..train.build import load_model

logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/adapt-lora-smollm2.yaml)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")


def run(args) -> None:
    recipe = AdaptRecipe.from_yaml(args.recipe, args.override)
    model, tokenizer = load_model(recipe)
    sae = AutoSAE.from_pretrained(recipe.sae, subfolder=recipe.sae_subfolder).eval()
    stream = contexts(TextSource(path=recipe.dataset), tokenizer, recipe.context_length)
    pool = list(itertools.islice(stream, recipe.steps * recipe.batch_size))
    if len(pool) < recipe.batch_size:
        raise ValueError(
            f"{recipe.dataset}: only {len(pool)} contexts of {recipe.context_length} tokens, "
            f"fewer than one batch of {recipe.batch_size}"
        )
    batches = [
        torch.stack(pool[i : i + recipe.batch_size])
        for i in range(0, len(pool) - recipe.batch_size + 1, recipe.batch_size)
    ]
    peft_model, history = adapt_lora(model, sae, batches, recipe)
    out = save_adapted(peft_model, [sae], recipe.output_dir)
    (out / "adapt_history.json").write_text(json.dumps({"recipe": recipe.to_dict(), "loss": history}, indent=1))
    logger.info(
        "adapter and SAE saved to %s; %s %.4f -> %.4f over %d steps",
        out,
        recipe.objective,
        history[0],
        history[-1],
        len(history),
    )
