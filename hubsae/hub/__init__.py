"""Push SAEs to the Hugging Face Hub: many SAEs in one repo, in one commit, with a model card and an index.

A repo holds one subfolder per SAE (a normal `save_pretrained` folder: config.json +
model.safetensors), a README.md model card (library_name hubsae, tags, base model, a table of
hookpoint, d_sae, k / L0, FVU and dead %) and hubsae_index.json, which lists the SAEs: `list_saes(repo)`
discovers them without downloading weights and `AutoSAE.from_pretrained(repo, subfolder=...)` pulls one.
From the command line, DIR is one SAE folder (pushed to a subfolder named after its hookpoint) or a
folder of SAE folders (subfolder = relative path); published formats (SAELens, sparsify, Gemma Scope,
Llama Scope) are converted on the way.
"""

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import close_session

from ..auto import AutoSAE
from ..formats import FORMATS, NATIVE_MARKERS, UnknownFormatError, detect, open_folder
from ..hooks.hookpoints import subfolder_for
from ..saes.base import SAE
from ..train.checkpoint import CHECKPOINT_DIR
from .card import build_card, card_base_model, common_base_model

logger = logging.getLogger(__name__)

HUB_INDEX_NAME = "hubsae_index.json"
CARD_NAME = "README.md"
INDEX_FORMAT = "hubsae-index/1"
DEFAULT_PUSH_TIMEOUT = 600.0  # seconds for uploads + commit; SAE folders are MBs to a few GBs
_RESERVED = {HUB_INDEX_NAME, CARD_NAME, ".gitattributes"}

SAEs = Mapping[str, SAE] | Sequence[SAE] | SAE


def push_to_hub(
    saes: SAEs,
    repo_id: str,
    *,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    extra_folders: Mapping[str, str | os.PathLike] | None = None,
    extra_files: Mapping[str, str | os.PathLike] | None = None,
    card_section: str | None = None,
    timeout: float | None = DEFAULT_PUSH_TIMEOUT,
) -> CommitInfo:
    """Upload SAEs, the index and the model card to `repo_id` in one commit.

    Args:
        saes: `{subfolder: sae}`, a list of SAEs (each goes to a subfolder named after its
            hookpoint) or one SAE.
        metrics: `{subfolder: {"l0": ..., "fvu": ..., "dead_fraction": ...}}`; any may be absent.
        revision: branch to commit to (created from main when missing); default main.
        create_pr: open a pull request instead of committing to the branch.
        private: visibility when the repo is created (an existing repo keeps its own).
        token: as in huggingface_hub (default: HF_TOKEN or the saved login).
        base_model: the model the SAEs read; default the SAEs' `base_model_name_or_path`.
        extra_folders: `{path_in_repo: local folder}` uploaded in the same commit, e.g. the peft
            adapter that `hubsae.adapt.save_adapted` writes next to its SAE (`lora_adapter`).
        extra_files: `{path_in_repo: local file}` uploaded in the same commit (e.g. `steering.json`).
        card_section: Markdown appended to the model card's body.

        timeout: seconds the upload and commit may take before a `TimeoutError` (None: no limit).
            A Hub commit is atomic, so a push that times out leaves no partial commit.
    """
    named = _name_saes(saes)
    metrics = dict(metrics or {})
    unknown = sorted(set(metrics) - set(named))
    if unknown:
        raise ValueError(f"metrics given for subfolders that are not pushed: {unknown}; pushed: {sorted(named)}")
    api = _prepared_repo(repo_id, token, private, revision, create_pr)
    index = _existing_index(api, repo_id, revision)
    index.update({sub: sae_entry(sae, metrics.get(sub)) for sub, sae in named.items()})
    card = build_card(
        repo_id, index, card_base_model(base_model or common_base_model(named)), datasets, license, tags, card_section
    )
    with tempfile.TemporaryDirectory(prefix="hubsae-push-") as tmp:
        root = Path(tmp)
        _stage(root, named, index, card, extra_folders or {}, extra_files or {})
        message = commit_message or f"Upload {len(named)} SAE(s) with hubsae: {', '.join(sorted(named))}"
        commit = dict(commit_message=message, commit_description=commit_description, revision=revision)
        info = _within(timeout, _committer(api, repo_id, root, named, create_pr, **commit), f"pushing to {repo_id}")
    logger.info("pushed %d SAE(s) to %s: %s", len(named), repo_id, info.pr_url or info.commit_url)
    return info


def _prepared_repo(repo_id: str, token, private: bool | None, revision: str | None, create_pr: bool) -> HfApi:
    """The client, with the repo (and the branch a direct commit goes to) created when missing."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api


def _committer(api: HfApi, repo_id: str, root: Path, named, create_pr: bool, **commit):
    """The one `create_commit` of everything staged in `root`, deleting the files of re-pushed SAEs
    that the new version no longer has."""
    operations: list = [
        CommitOperationAdd(path_in_repo=path.relative_to(root).as_posix(), path_or_fileobj=str(path))
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]
    operations += _stale_files(api, repo_id, commit["revision"], named, {op.path_in_repo for op in operations})
    return functools.partial(api.create_commit, repo_id, operations, create_pr=create_pr, **commit)


def _stage(root: Path, named: Mapping[str, SAE], index: dict, card, extra_folders, extra_files) -> None:
    """Write what one commit uploads into `root`: the SAE folders, extras, the index and the card."""
    for sub, sae in named.items():
        sae.save_pretrained(root / sub)
    _copy_extra_folders(extra_folders, named, root)
    _copy_extra_files(extra_files, named, root)
    index_json = json.dumps({"format": INDEX_FORMAT, "saes": index}, indent=2, allow_nan=False)
    (root / HUB_INDEX_NAME).write_text(index_json + "\n")
    card.save(root / CARD_NAME)


def _within(timeout: float | None, call, what: str):
    """`call()`, or a TimeoutError after `timeout` s: huggingface_hub's client itself never times out."""
    if timeout is None:
        return call()
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as err:  # handed to the caller's thread below
            result["error"] = err

    worker = threading.Thread(target=run, daemon=True, name="hubsae-push")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        close_session()  # drops the stuck connection, so the worker's request fails instead of lingering
        raise TimeoutError(
            f"{what}: the Hub did not answer within {timeout:g} s; nothing was committed by this push "
            "(a commit is atomic). Retry, or raise the timeout (push_to_hub(timeout=...), --timeout)"
        )
    if "error" in result:
        raise result["error"]
    return result["value"]


def _copy_extra_folders(extra: Mapping[str, str | os.PathLike], named: Mapping[str, SAE], root: Path) -> None:
    for name, src in extra.items():
        _check_subfolder(name)
        if name in named or name in _RESERVED:
            raise ValueError(f"extra folder {name!r} would overwrite an SAE subfolder or {sorted(_RESERVED)}")
        if not Path(src).is_dir():
            raise FileNotFoundError(f"extra folder {name!r}: {src} is not a directory")
        shutil.copytree(src, root / name)


def _copy_extra_files(extra: Mapping[str, str | os.PathLike], named: Mapping[str, SAE], root: Path) -> None:
    for name, src in extra.items():
        _check_subfolder(name)
        if name in _RESERVED or any(name == sub or name.startswith(f"{sub}/") for sub in named):
            raise ValueError(f"extra file {name!r} would overwrite an SAE subfolder or {sorted(_RESERVED)}")
        if not Path(src).is_file():
            raise FileNotFoundError(f"extra file {name!r}: {src} is not a file")
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / name)


def list_saes(
    path_or_repo: str | os.PathLike, revision: str | None = None, token: str | bool | None = None
) -> dict[str, dict]:
    """The SAEs of a repo or folder, from its index (no weights are downloaded): `{subfolder: entry}`."""
    path = _index_path(path_or_repo, revision, token)
    try:
        index = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(index, dict) or not isinstance(index.get("saes"), dict):
        raise ValueError(f"{path} is not a hubsae index: it has no 'saes' mapping")
    return index["saes"]


def _index_path(path_or_repo: str | os.PathLike, revision: str | None, token) -> Path:
    local = Path(path_or_repo)
    if local.is_dir():
        if not (local / HUB_INDEX_NAME).is_file():
            raise FileNotFoundError(f"{local} has no file {HUB_INDEX_NAME}: it is not a folder pushed by hubsae")
        return local / HUB_INDEX_NAME
    repo = str(path_or_repo)
    try:
        return Path(hf_hub_download(repo, HUB_INDEX_NAME, revision=revision, token=token))
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError, its parent class
        raise FileNotFoundError(
            f"{HUB_INDEX_NAME} of {repo} is not in the local cache and HF_HUB_OFFLINE is set; load it once online"
        ) from e
    except GatedRepoError as e:
        raise FileNotFoundError(f"{repo} is gated: accept its terms on the Hub, then log in (or pass token=)") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"{repo} is neither a local folder nor a Hub repo one can access") from e
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"{repo} has no revision {revision!r}") from e
    except EntryNotFoundError as e:
        raise FileNotFoundError(
            f"{repo} has no file {HUB_INDEX_NAME}: it was not pushed by hubsae (load its SAEs with "
            "AutoSAE.from_pretrained(repo, subfolder=...))"
        ) from e


# ---- pieces ---------------------------------------------------------------------------------


def _name_saes(saes: SAEs) -> dict[str, SAE]:
    """`{subfolder: sae}` with every subfolder checked and every SAE knowing its hookpoint."""
    if isinstance(saes, SAE):
        saes = [saes]
    if isinstance(saes, Mapping):
        named = dict(saes)
    else:
        named = {}
        for i, sae in enumerate(saes):
            _check_hookpoint(sae, f"SAE #{i}")
            sub = subfolder_for(sae.config.hookpoint)
            if sub in named:
                raise ValueError(
                    f"two SAEs read hookpoint {sae.config.hookpoint!r}; pass a dict {{subfolder: sae}} to name them"
                )
            named[sub] = sae
    if not named:
        raise ValueError("nothing to push: no SAEs given")
    for sub, sae in named.items():
        if not isinstance(sae, SAE):
            raise TypeError(f"subfolder {sub!r}: expected a hubsae SAE, got {type(sae).__name__}")
        _check_subfolder(sub)
        _check_hookpoint(sae, f"the SAE for subfolder {sub!r}")
    return named


def _check_hookpoint(sae: SAE, what: str) -> None:
    if not getattr(sae.config, "hookpoint", None):
        raise ValueError(
            f"{what} has no hookpoint in its config; set sae.config.hookpoint to the module path it reads "
            "(e.g. 'model.layers.6') before pushing, or users cannot tell where it belongs"
        )


def _check_subfolder(sub: str) -> None:
    parts = PurePosixPath(sub).parts
    if not sub or sub.startswith("/") or "\\" in sub or any(p in ("..", ".") for p in parts) or sub in _RESERVED:
        raise ValueError(f"invalid subfolder {sub!r}: use a relative path such as 'model.layers.6'")


def sae_entry(sae: SAE, metrics: Mapping[str, float] | None = None) -> dict:
    """What the index records about one SAE."""
    cfg = sae.config
    entry = {
        "architecture": cfg.model_type,
        "hookpoint": cfg.hookpoint,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "k": getattr(cfg, "k", None),
        "base_model": cfg.base_model_name_or_path,
        "metrics": {},
    }
    if cfg.hookpoint_out:  # a transcoder: where it writes, and how wide that is
        entry.update(hookpoint_out=cfg.hookpoint_out, d_out=cfg.resolved_d_out)
    for name, value in (metrics or {}).items():
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"metric {name!r} of hookpoint {cfg.hookpoint!r} must be a number, got {value!r}")
        # NaN is not JSON: an undefined metric (e.g. FVU of constant activations) is written as null
        entry["metrics"][name] = float(value) if value is not None and math.isfinite(value) else None
    return entry


def _existing_index(api: HfApi, repo_id: str, revision: str | None) -> dict[str, dict]:
    """Entries already in the repo, so pushing more SAEs extends the card instead of replacing it."""
    try:
        path = api.hf_hub_download(repo_id, HUB_INDEX_NAME, revision=revision)
    except (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError):
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{HUB_INDEX_NAME} in {repo_id} is not valid JSON ({e}); fix or delete it before pushing"
        ) from e
    saes = data.get("saes", {}) if isinstance(data, dict) else None
    if not isinstance(saes, dict) or not all(isinstance(e, dict) for e in saes.values()):
        # replacing it would drop the SAEs it lists from the index and the card
        raise ValueError(
            f"{HUB_INDEX_NAME} in {repo_id} is malformed (expected {{'saes': {{subfolder: entry}}}}, got "
            f"{type(saes if isinstance(data, dict) else data).__name__}); fix or delete it before pushing"
        )
    return dict(saes)


def _stale_files(api: HfApi, repo_id: str, revision: str | None, named, new: set[str]) -> list:
    """Deletions of files left in a replaced SAE's subfolder (e.g. old shards), in the same commit."""
    try:
        existing = api.list_repo_files(repo_id, revision=revision)
    except (RevisionNotFoundError, RepositoryNotFoundError, EntryNotFoundError):
        return []
    prefixes = tuple(f"{sub}/" for sub in named)
    return [CommitOperationDelete(path_in_repo=f) for f in sorted(existing) if f.startswith(prefixes) and f not in new]


def collect_saes(directory: str | os.PathLike) -> dict[str, SAE]:
    """`{subfolder: sae}` from DIR: one SAE folder (subfolder named after its hookpoint) or a folder
    of SAE folders at any depth (subfolder = relative path). Published formats are converted."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    try:
        detect(open_folder(root))
    except UnknownFormatError:
        pass  # a folder of SAE folders
    else:
        sae = AutoSAE.from_pretrained(root)
        _check_hookpoint(sae, f"the SAE in {root}")
        return {subfolder_for(sae.config.hookpoint): sae}
    markers = {m[0] for m in NATIVE_MARKERS} | {f.markers[0] for f in FORMATS}
    found = {p.parent for name in markers for p in root.rglob(name)} - {root}
    folders = sorted(p for p in found if not _is_training_state(p.relative_to(root)))
    if len(folders) < len(found):
        logger.info("skipping %d SAE folder(s) inside checkpoints/ or hidden folders", len(found) - len(folders))
    if not folders:
        raise FileNotFoundError(f"{root} holds no SAE folder (none of {sorted(markers)} found)")
    return {p.relative_to(root).as_posix(): AutoSAE.from_pretrained(p) for p in folders}


def _is_training_state(relative: Path) -> bool:
    """A folder of a training run's checkpoints (its SAEs are copies of the final ones) or a hidden one."""
    return any(part == CHECKPOINT_DIR or part.startswith(".") for part in relative.parts)
