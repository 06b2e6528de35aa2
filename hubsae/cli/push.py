"""`hubsae push DIRECTORY REPO_ID`: push a folder of SAEs to the Hub in one commit, with a model card
and an index (`hubsae_index.json`); a `lora_adapter/` folder written by `hubsae adapt` goes along."""

import json
import logging
from pathlib import Path

from ..files import ADAPTER_DIR
from ..hub import DEFAULT_PUSH_TIMEOUT, collect_saes, push_to_hub

logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument(
        "directory",
        help="an SAE folder, or a folder of SAE folders (one subfolder per SAE); a `lora_adapter/` folder "
        "in it (written by `hubsae adapt`) is pushed too",
    )
    parser.add_argument("repo_id", help="Hub repo, e.g. my-org/smollm2-topk-saes")
    parser.add_argument("--revision", help="branch to commit to (created when missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--metrics", help='JSON file {subfolder: {"l0": .., "fvu": .., "dead_fraction": ..}}')
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--base-model", help="model the SAEs read (default: from their configs)")
    parser.add_argument("--dataset", action="append", help="training dataset id (repeatable)")
    parser.add_argument("--license", help="license id for the card, e.g. apache-2.0")
    parser.add_argument("--tag", action="append", help="extra card tag (repeatable)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_PUSH_TIMEOUT, help="seconds before giving up on the Hub (default 600)"
    )


def run(args) -> None:
    saes = collect_saes(args.directory)
    adapter = Path(args.directory) / ADAPTER_DIR
    extra = {ADAPTER_DIR: adapter} if (adapter / "adapter_config.json").is_file() else None
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    info = push_to_hub(
        saes,
        args.repo_id,
        metrics=metrics,
        commit_message=args.message,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        create_pr=args.create_pr,
        base_model=args.base_model,
        datasets=args.dataset,
        license=args.license,
        tags=args.tag,
        extra_folders=extra,
        timeout=args.timeout,
    )
    logger.info("%d SAE(s) (%s) -> %s", len(saes), ", ".join(sorted(saes)), info.pr_url or info.commit_url)
