"""Train SAEs from a YAML recipe: `hubsae train RECIPE.yaml [--override key=value ...] [--resume]`.

The same command runs under `accelerate launch` (e.g. with a config from recipes/accelerate/).
The trained SAEs land in `<output_dir>/<hookpoint>/`, loadable with `AutoSAE.from_pretrained`.
`--seeds N` trains N runs with seeds seed, seed+1, ... into `<output_dir>/seed_<seed>/` (evaluate them
together with `hubsae eval --suite ... <output_dir>`: mean +- sd per metric and cross-seed matching).
"""

import argparse
import dataclasses
import logging
from pathlib import Path

from ..train.config import TrainConfig
from .eval import positive_int

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/); its keys are TrainConfig fields")
    parser.add_argument(
        "--override",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key (value parsed as YAML; `sae.k=64` sets a key of the sae mapping); repeatable",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from the latest checkpoint in output_dir (or from the given checkpoint folder)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run in output_dir (refused by default: its SAEs and checkpoints would be lost)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        metavar="N",
        help="train N seeds (the recipe's seed, seed+1, ...) into output_dir/seed_<seed>/",
    )


def seed_configs(config: TrainConfig, n: int) -> list[TrainConfig]:
    """N copies of `config` with seeds seed .. seed+n-1, each writing to output_dir/seed_<seed>."""
    if n < 1:
        raise ValueError(f"--seeds must be at least 1, got {n}")
    seeds = range(config.seed, config.seed + n)
    return [dataclasses.replace(config, seed=s, output_dir=str(Path(config.output_dir) / f"seed_{s}")) for s in seeds]


def run(args: argparse.Namespace) -> None:
    from ..train.trainer import Trainer, exit_after_distributed

    config = TrainConfig.from_yaml(args.recipe, args.override)
    if args.seeds is None:
        configs = [config]
    elif isinstance(args.resume, str):
        raise ValueError("--resume CHECKPOINT names one run; with --seeds use --resume alone (each seed's latest)")
    else:
        configs = seed_configs(config, args.seeds)
    for i, cfg in enumerate(configs):
        if len(configs) > 1:
            logger.info("seed %d (%d of %d) -> %s", cfg.seed, i + 1, len(configs), cfg.output_dir)
        trainer = Trainer(cfg)
        trainer.train(resume=args.resume, overwrite=args.overwrite)
    exit_after_distributed(trainer.accelerator)
