"""Labelled text that exists offline, for sparse probing: no download, only files already on disk.

Two tasks, both read from files that Debian packages (or Python itself) install:

- `code_snippets`: the programming language of a source snippet, SAEBench's code task (Karvonen et
  al. 2025, arXiv 2503.09532, Sec. 3.4, which uses GitHub code) rebuilt from this machine:
  python: the running interpreter's standard library (`sysconfig.get_paths()["stdlib"]`, *.py;
          always present wherever hubsae runs);
  c:      C headers under /usr/include (*.h; libc6-dev, which any machine with gcc has);
  perl:   Perl modules under /usr/share/perl and /usr/share/perl5 (*.pm; Debian's perl-modules);
  shell:  scripts in /usr/bin, /usr/sbin and /etc whose first line is a #!/bin/sh or bash shebang.
- `fortunes`: the category of a fortune-cookie entry, read from /usr/share/games/fortunes/CATEGORY
  (Debian's `fortunes` package: computers, food, law, ...; `fortunes-min` has only fortunes,
  literature and riddles). Entries are separated by lines holding a single "%".

Sampling is deterministic: files are listed in sorted order and drawn with `random.Random(seed)`.
A missing source (no such category file, no files for a language) is a FileNotFoundError that names
the path and the Debian package that provides it.
"""

import random
import re
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CODE_LANGUAGES",
    "DEFAULT_FORTUNE_CATEGORIES",
    "FORTUNES_DIR",
    "LabelledTexts",
    "code_files",
    "code_snippets",
    "fortune_entries",
    "fortunes",
]

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# categories of Debian's `fortunes` package with at least ~150 entries each
DEFAULT_FORTUNE_CATEGORIES = ("computers", "food", "law", "love", "politics", "science", "sports", "startrek")
CODE_LANGUAGES = ("python", "c", "perl", "shell")
_SHEBANG = re.compile(rb"^#!\s*(/usr)?/bin/(env\s+)?(ba|da)?sh\b")


@dataclass
class LabelledTexts:
    """Texts with integer labels into `classes`; `sources` says where each text was read."""

    texts: list[str]
    labels: list[int]
    classes: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def fortune_entries(category: str, directory: str | Path = FORTUNES_DIR) -> list[str]:
    """The entries of one fortunes category file, stripped, empty ones dropped."""
    path = Path(directory) / category
    if not path.is_file():
        have = sorted(p.name for p in Path(directory).glob("*") if p.is_file() and not p.suffix)
        raise FileNotFoundError(
            f"no fortunes category {category!r}: {path} does not exist (Debian package 'fortunes' or "
            f"'fortunes-min' installs it); categories here: {have or 'none'}"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    return [entry.strip() for entry in re.split(r"^%$", text, flags=re.M) if entry.strip()]


def fortunes(
    categories: Sequence[str] = DEFAULT_FORTUNE_CATEGORIES,
    per_class: int = 100,
    seed: int = 0,
    max_chars: int = 600,
    directory: str | Path = FORTUNES_DIR,
) -> LabelledTexts:
    """Up to `per_class` entries of each category (fewer if the file has fewer), label = category."""
    out = LabelledTexts([], [], list(categories), [])
    rng = random.Random(seed)
    for label, category in enumerate(categories):
        entries = fortune_entries(category, directory)
        for entry in rng.sample(entries, min(per_class, len(entries))):
            out.texts.append(entry[:max_chars])
            out.labels.append(label)
            out.sources.append(str(Path(directory) / category))
    return out


def _is_shell_script(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return bool(_SHEBANG.match(f.readline(80)))
    except OSError:
        return False


def _shell_files() -> list[Path]:
    found = []
    for folder in ("/usr/bin", "/usr/sbin", "/etc"):
        for path in Path(folder).glob("*" if folder != "/etc" else "**/*"):
            if path.is_file() and not path.is_symlink() and _is_shell_script(path):
                found.append(path)
    return found


_FINDERS: dict[str, tuple[Callable[[], list[Path]], str]] = {
    "python": (lambda: list(Path(sysconfig.get_paths()["stdlib"]).glob("**/*.py")), "the Python standard library"),
    "c": (lambda: list(Path("/usr/include").glob("**/*.h")), "/usr/include (Debian package libc6-dev)"),
    "perl": (
        lambda: [p for d in ("/usr/share/perl", "/usr/share/perl5") for p in Path(d).glob("**/*.pm")],
        "/usr/share/perl* (Debian package perl-modules)",
    ),
    "shell": (_shell_files, "sh/bash scripts in /usr/bin, /usr/sbin, /etc"),
}


def code_files(language: str) -> list[Path]:
    """Sorted source files of `language` on this machine (see the module docstring for where)."""
    if language not in _FINDERS:
        raise ValueError(f"unknown language {language!r}; known: {list(_FINDERS)}")
    finder, where = _FINDERS[language]
    files = sorted({p for p in finder() if p.stat().st_size > 200})
    if not files:
        raise FileNotFoundError(f"no {language} source files found in {where}")
    return files


def _snippet(path: Path, rng: random.Random, max_chars: int) -> str | None:
    """A window of whole lines starting at a random line, up to `max_chars`; None if it is blank."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = rng.randrange(len(lines)) if lines else 0
    text = "\n".join(lines[start:])[:max_chars]
    return text if len(text.split()) >= 5 else None


def code_snippets(
    languages: Sequence[str] = CODE_LANGUAGES, per_class: int = 100, seed: int = 0, max_chars: int = 400
) -> LabelledTexts:
    """`per_class` snippets per language, each from a different file where there are enough files."""
    out = LabelledTexts([], [], list(languages), [])
    rng = random.Random(seed)
    for label, language in enumerate(languages):
        files = code_files(language)
        order = rng.sample(files, len(files))
        kept = 0
        for path in order * (1 + per_class // len(order)):
            if kept == per_class:
                break
            snippet = _snippet(path, rng, max_chars)
            if snippet is not None:
                out.texts.append(snippet)
                out.labels.append(label)
                out.sources.append(str(path))
                kept += 1
    return out
