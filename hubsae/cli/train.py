"""Train SAEs from a YAML recipe: `hubsae train RECIPE.yaml [--override key=value ...] [--resume]`.

The same command runs under `accelerate launch` (e.g. with a config from recipes/accelerate/).
The trained SAEs land in `<output_dir>/<hookpoint>/`, loadable with `AutoSAE.from_pretrained`.
"""

import argparse
import logging

from ..train.config import TrainConfig

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


def run(args: argparse.Namespace) -> None:
    from ..train.trainer import Trainer, exit_after_distributed

    config = TrainConfig.from_yaml(args.recipe, args.override)
    trainer = Trainer(config)
    trainer.train(resume=args.resume, overwrite=args.overwrite)
    exit_after_distributed(trainer.accelerator)
