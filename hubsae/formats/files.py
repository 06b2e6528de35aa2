"""The files of one SAE folder, local or on the Hub: listed first (to detect the format), fetched
one by one (only what the format needs is downloaded).

Offline (HF_HUB_OFFLINE=1) the listing comes from the cached snapshot, so a cached repo loads
without any request and a missing one fails at once.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants as hf_constants
from huggingface_hub import HfApi, RepoFolder, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id

from ..files import hub_errors

# Folders whose files matter for detection (Llama Scope keeps its weights in checkpoints/).
NESTED = ("checkpoints",)


@dataclass
class SAEFolder:
    """One SAE's folder: `names` are paths relative to it; `fetch(name)` gives a local path."""

    source: str  # local path or repo id
    subfolder: str | None
    revision: str | None
    names: frozenset[str]
    local_root: Path | None  # set for local folders and offline snapshots
    hub_kwargs: dict

    @property
    def where(self) -> str:
        rev = f" at revision {self.revision!r}" if self.revision else ""
        return f"{self.source}" + (f" (subfolder {self.subfolder!r})" if self.subfolder else "") + rev

    @property
    def path_hint(self) -> str:
        """Repo id and subfolder joined; formats that encode their config in paths parse this."""
        return "/".join(p for p in (str(self.source), self.subfolder or "") if p)

    def fetch(self, name: str) -> Path:
        if name not in self.names:
            raise FileNotFoundError(f"{self.where} has no file {name}; it holds {sorted(self.names)}")
        if self.local_root is not None:
            return self.local_root / name
        what = f"file {name}" + (f" in subfolder {self.subfolder!r}" if self.subfolder else "")
        with hub_errors(self.source, what, self.revision):
            return Path(
                hf_hub_download(
                    self.source, name, subfolder=self.subfolder or None, revision=self.revision, **self.hub_kwargs
                )
            )

    def fetch_parent(self, name: str) -> Path | None:
        """A file of the folder above, when there is one (sparsify keeps its training config there)."""
        if self.local_root is not None:
            path = self.local_root.parent / name
            return path if path.is_file() and self.local_root.parent != self.local_root else None
        if not self.subfolder:
            return None
        parent = "/".join(self.subfolder.strip("/").split("/")[:-1]) or None
        try:
            path = hf_hub_download(self.source, name, subfolder=parent, revision=self.revision, **self.hub_kwargs)
        except (EntryNotFoundError, HfHubHTTPError):
            return None
        return Path(path)


def open_folder(
    source: str | os.PathLike,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> SAEFolder:
    """List an SAE folder; a FileNotFoundError says clearly what is missing (repo, revision, subfolder)."""
    hub_kwargs = {k: v for k, v in (("token", token), ("cache_dir", cache_dir)) if v is not None}
    local = Path(source)
    if local.is_dir():
        root = local / (subfolder or "")
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root} does not exist: {source} (subfolder {subfolder!r}) holds no config.json or other SAE files"
            )
        return SAEFolder(str(source), subfolder, None, _list_local(root), root, hub_kwargs)
    if local.exists():
        raise FileNotFoundError(f"{source} is a file; pass the folder that holds the SAE's files")
    try:
        validate_repo_id(str(source))
    except HFValidationError as e:
        raise FileNotFoundError(f"{source} is neither a local folder nor a valid Hub repo id") from e
    if hf_constants.HF_HUB_OFFLINE or local_files_only:
        root = _cached_snapshot(str(source), revision, cache_dir) / (subfolder or "")
        if not root.is_dir():
            raise FileNotFoundError(
                f"subfolder {subfolder!r} of {source} is not in the local cache and HF_HUB_OFFLINE is set "
                "(or local_files_only=True); load it once online"
            )
        return SAEFolder(str(source), subfolder, revision, _list_local(root), root, hub_kwargs)
    names = _list_hub(str(source), subfolder, revision, token)
    return SAEFolder(str(source), subfolder, revision, names, None, hub_kwargs)


def _list_local(root: Path) -> frozenset[str]:
    names = {p.name for p in root.iterdir() if p.is_file()}
    for sub in NESTED:
        if (root / sub).is_dir():
            names |= {f"{sub}/{p.name}" for p in (root / sub).iterdir() if p.is_file()}
    return frozenset(names)


def _list_hub(repo_id: str, subfolder: str | None, revision: str | None, token) -> frozenset[str]:
    api = HfApi(token=token)
    where = f"{repo_id}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    what = f"subfolder {subfolder!r}" if subfolder else "files"
    with hub_errors(repo_id, what, revision):
        entries = list(api.list_repo_tree(repo_id, path_in_repo=subfolder or None, revision=revision))
        for entry in [e for e in entries if isinstance(e, RepoFolder) and e.path[len(prefix) :] in NESTED]:
            entries += list(api.list_repo_tree(repo_id, path_in_repo=entry.path, revision=revision))
    names = frozenset(e.path[len(prefix) :] for e in entries if not isinstance(e, RepoFolder))
    if not names:
        raise FileNotFoundError(f"{where} holds no files at revision {revision or 'main'!r}")
    return names


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir) -> Path:
    """The cached snapshot folder of a revision (branch, tag, PR ref or commit sha)."""
    storage = Path(cache_dir or hf_constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    rev = revision or "main"
    ref = storage / "refs" / rev
    sha = ref.read_text().strip() if ref.is_file() else rev
    snapshot = storage / "snapshots" / sha
    if not snapshot.is_dir():
        raise FileNotFoundError(
            f"{repo_id} is not a local folder, and as a Hub repo (revision {rev!r}) it is not in the local cache "
            f"{storage.parent} and HF_HUB_OFFLINE is set (or local_files_only=True); load it once online"
        ) from LocalEntryNotFoundError(str(snapshot))
    return snapshot
