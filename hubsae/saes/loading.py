"""Strict loading: a config file must exist, every weight must match, corrupt files fail loudly.

transformers, left alone, returns a default config for a missing `subfolder/config.json`,
initializes missing weights at random, and ignores unexpected ones (hub.md §1.2). For an SAE
each of those is a silent wrong answer, so hubsae turns them into errors here.
"""

import json
import os
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors import SafetensorError

CONFIG_NAME = "config.json"


def _describe(path_or_repo: str | os.PathLike, subfolder: str | None) -> str:
    return f"{path_or_repo}" + (f" (subfolder {subfolder!r})" if subfolder else "")


def resolve_file(
    path_or_repo: str | os.PathLike,
    filename: str,
    subfolder: str | None = None,
    revision: str | None = None,
    **hub_kwargs,
) -> Path:
    """Local path of `filename` in a folder or Hub repo; a clear FileNotFoundError if it is not there."""
    local = Path(path_or_repo)
    if local.is_dir():
        path = local / (subfolder or "") / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {_describe(path_or_repo, subfolder)} holds no {filename}")
        return path
    try:
        return Path(hf_hub_download(str(path_or_repo), filename, subfolder=subfolder, revision=revision, **hub_kwargs))
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"{path_or_repo} is neither a local folder nor a Hub repo one can access") from e
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"{filename} of {_describe(path_or_repo, subfolder)} is not in the local cache and the Hub cannot be "
            "reached (HF_HUB_OFFLINE is set or there is no network)"
        ) from e
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"{_describe(path_or_repo, subfolder)} has no file {filename}") from e
    except HfHubHTTPError as e:
        raise OSError(f"could not fetch {filename} of {_describe(path_or_repo, subfolder)}: {e}") from e


def read_config_dict(path_or_repo, subfolder=None, revision=None, **hub_kwargs) -> tuple[dict, Path]:
    path = resolve_file(path_or_repo, CONFIG_NAME, subfolder, revision, **hub_kwargs)
    try:
        return json.loads(path.read_text()), path
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def check_loading_info(info: dict, where: str) -> None:
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing weights {sorted(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected weights {sorted(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        mism = ", ".join(f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in info["mismatched_keys"])
        problems.append(f"weights with the wrong shape ({mism})")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


def corrupt_file_error(err: SafetensorError | OSError, where: str) -> ValueError:
    return ValueError(f"{where}: the safetensors weights file is truncated or corrupted ({err})")
