"""Files and folders hubsae writes and reads: atomic writes, file modes, the cache root, shared names,
and the messages for files the Hub does not give.

The bottom layer: every other part of hubsae may import it, it imports none of them.
"""

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

ADAPTER_DIR = "lora_adapter"  # the peft adapter `hubsae adapt` writes next to its SAE, pushed with it


def cache_root() -> Path:
    """Where converted models and fetched corpora live (`HUBSAE_CACHE`, default ~/.cache/hubsae)."""
    return Path(os.environ.get("HUBSAE_CACHE", Path.home() / ".cache" / "hubsae"))


def default_file_mode() -> int:
    """The mode `open()` gives a new file under the current umask (0644 under umask 022).

    safetensors (0.6+) and `tempfile.mkstemp` create files 0600, readable by their owner only.
    """
    status = Path("/proc/self/status")
    umask = None
    if status.is_file():
        line = next((ln for ln in status.read_text().splitlines() if ln.startswith("Umask:")), None)
        umask = int(line.split()[1], 8) if line else None
    if umask is None:  # no procfs: read the umask by setting it (briefly process-wide)
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def set_default_mode(*paths: str | os.PathLike) -> None:
    """Give files the mode a plain `open()` would have (see `default_file_mode`)."""
    mode = default_file_mode()
    for path in paths:
        os.chmod(path, mode)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """`write(tmp_path)` into a temporary file beside `path`, then rename it into place.

    Readers never see half a file, and a crash leaves the previous version; the file gets the
    umask's mode, not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`text` (UTF-8) written atomically to `path` (see `atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@contextmanager
def hub_errors(repo_id: str, what: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's errors for `what` (a file or folder of `repo_id`) into one message each:
    FileNotFoundError for what is not there (or not reachable offline), OSError for other HTTP errors.
    Every Hub download and listing in hubsae goes through here, so the same cause reads the same."""
    rev = revision or "main"
    try:
        yield
    except GatedRepoError as e:  # before RepositoryNotFoundError, its parent class
        raise FileNotFoundError(f"{repo_id} is gated: accept its terms on the Hub, then log in (or pass token=)") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"{repo_id} is neither a local folder nor a Hub repo one can access") from e
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"{repo_id} has no revision {rev!r} (branch, tag or commit)") from e
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError, its parent class
        raise FileNotFoundError(
            f"{what} of {repo_id} is not in the local cache and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network); load it once online"
        ) from e
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"{repo_id} has no {what} at revision {rev!r}") from e
    except HfHubHTTPError as e:
        raise OSError(f"could not fetch {what} of {repo_id}: {e}") from e
