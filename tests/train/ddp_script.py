"""Run by test_ddp.py under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo).

argv: RECIPE_YAML OUT_DIR. Each process trains, then writes its SAEs' weights to
OUT_DIR/rank<r>-<hookpoint>.safetensors so the test can compare processes and layouts.
"""

import os
import sys

from safetensors.torch import save_file

from hubsae.train import TrainConfig, Trainer
from hubsae.train.trainer import exit_after_distributed


def main() -> None:
    recipe, out = sys.argv[1], sys.argv[2]
    trainer = Trainer(TrainConfig.from_yaml(recipe))
    saes = trainer.train()
    rank = trainer.accelerator.process_index
    for name, sae in saes.items():
        save_file(
            {k: v.contiguous() for k, v in sae.state_dict().items()},
            os.path.join(out, f"rank{rank}-{name}.safetensors"),
        )
    exit_after_distributed(trainer.accelerator)


if __name__ == "__main__":
    main()
