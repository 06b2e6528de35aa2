"""`hubsae` command line. Each subcommand lives next to the code it drives; this file only lists them."""

import argparse
import importlib
import logging
import os

# (name, module, help): the module defines `add_arguments(parser)` and `run(args)`.
COMMANDS = [
    ("demo", "hubsae.cli.demo", "the README's main job on the embedded SmolLM2"),
    ("eval", "hubsae.cli.eval", "evaluate SAEs on held-out text: FVU, L0, dead latents, CE loss recovered, KL"),
    ("browse", "hubsae.cli.browse", "write a static HTML feature browser for an SAE"),
    ("train", "hubsae.cli.train", "train SAEs from a YAML recipe (also under `accelerate launch`)"),
    ("adapt", "hubsae.cli.adapt", "train LoRA adapters on the LLM around a frozen, spliced SAE (from a YAML recipe)"),
    ("push", "hubsae.cli.push", "push a folder of SAEs to the Hub in one commit, with a model card and an index"),
    ("steer", "hubsae.cli.steer", "generate with and without adding SAE feature directions, side by side"),
    ("attribute", "hubsae.cli.attribute", "which SAE features at which tokens drive a next token (AtP, IG)"),
]


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="hubsae", description="Sparse autoencoders as Hugging Face models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
