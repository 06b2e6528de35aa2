"""`hubsae demo`: the README's main job on the embedded SmolLM2 (train, save, reload, measure,
steer, write the browser)."""

import argparse

from .. import demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layer", type=int, default=6, help="residual stream after this decoder layer (of SmolLM2's 30)"
    )
    parser.add_argument("--expansion-factor", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=300_000, help="training tokens")
    parser.add_argument("--browser-contexts", type=int, default=32, help="held-out contexts in the feature browser")
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument("--candidates", type=int, default=5, help="concept features whose steering curves are swept")
    parser.add_argument("--neutral-contexts", type=int, default=24, help="held-out contexts of neutral text")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens generated per steered prompt")


def run(args: argparse.Namespace) -> None:
    demo.run(args)
