"""Text -> fixed-length token contexts: plain text files and folders, or Hugging Face `datasets`.

Documents are tokenized without special tokens and concatenated with an EOS (or BOS)
separator, then cut into contexts of `context_length` tokens. With `prepend_bos`, each context
is BOS + `context_length - 1` text tokens, so every context looks like the start of a sequence
to the model (sae-lens' convention). The stream is deterministic: the same source and
tokenizer always give the same contexts in the same order, which resuming relies on.
"""

import codecs
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# The tokenizer sees at most this many characters at once (long plays would trigger
# "sequence longer than max length" warnings and a single huge encode otherwise).
MAX_PIECE_CHARS = 32_000
# A file whose first block holds a NUL byte or invalid UTF-8 is not text (a binary or compressed
# file, or another encoding); later stray bytes are replaced, with a warning.
TEXT_CHECK_BYTES = 8192
MAGIC = {
    b"\x1f\x8b": "a gzip file",
    b"PK\x03\x04": "a zip file",
    b"BZh": "a bzip2 file",
    b"\xfd7zXZ\x00": "an xz file",
    b"\x28\xb5\x2f\xfd": "a zstd file",
    b"PAR1": "a Parquet file",
    b"\xff\xfe": "UTF-16 text",
    b"\xfe\xff": "UTF-16 text",
}


@dataclass(frozen=True)
class TextSource:
    """Where the text comes from.

    Args:
        path: a text file, a folder (files matching `glob`, sorted), `corpus:shakespeare` (see
            `corpora.py`), or `hf:NAME` for a Hugging Face dataset (needs the `datasets` extra).
        glob: file pattern inside a folder.
        split, text_column, config_name, streaming: for `hf:` datasets.
    """

    path: str
    glob: str = "**/*.txt"
    split: str = "train"
    text_column: str = "text"
    config_name: str | None = None
    streaming: bool = True


def text_files(path: Path, glob: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"dataset path {str(path)!r} is neither a file nor a folder")
    files = sorted(p for p in path.glob(glob) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"dataset folder {str(path)!r} has no files matching {glob!r}")
    return files


def resolve_path(path: str) -> Path:
    """`corpus:NAME` -> the corpus folder (downloaded once); `~` and `$VARS` are expanded."""
    if path.startswith("corpus:"):
        from .corpora import corpus_path

        return corpus_path(path[len("corpus:") :])
    return Path(os.path.expandvars(os.path.expanduser(path)))


def iter_documents(source: TextSource) -> Iterator[str]:
    """The documents of a source, in a fixed order: one per file, or one per dataset row."""
    if source.path.startswith("hf:"):
        yield from _hf_documents(source)
        return
    for file in text_files(resolve_path(source.path), source.glob):
        yield read_text_file(file)


def read_text_file(path: Path) -> str:
    """A UTF-8 text file's contents; a ValueError naming the file if its first block is not text."""
    data = path.read_bytes()
    check_is_text(data[:TEXT_CHECK_BYTES], path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        text = data.decode("utf-8", errors="replace")
        replaced = text.count("\ufffd") - data.decode("utf-8", errors="ignore").count("\ufffd")
        logger.warning(
            "%s: %d invalid UTF-8 sequence(s) after the first %d bytes (the first at byte %d) were replaced by U+FFFD",
            path,
            replaced,
            TEXT_CHECK_BYTES,
            e.start,
        )
        return text


def check_is_text(head: bytes, path: Path) -> None:
    """Refuse a file whose first block holds a NUL byte or invalid UTF-8 (naming gzip, zip, ... by magic number)."""
    kind = next((what for magic, what in MAGIC.items() if head.startswith(magic)), None)
    problem = None
    nul = head.find(b"\0")
    if nul >= 0:
        problem = f"a NUL byte at byte {nul}"
    else:
        try:  # a multi-byte character cut at the end of the block is fine
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError as e:
            problem = f"invalid UTF-8 at byte {e.start} ({head[e.start : e.start + 1]!r})"
    if problem:
        looks = f"; it looks like {kind}" if kind else ""
        raise ValueError(
            f"dataset file {str(path)!r} is not UTF-8 text: {problem} of its first {TEXT_CHECK_BYTES} bytes{looks}. "
            "Training on it would learn replacement characters: decompress or convert it to UTF-8 text, "
            "or exclude it with dataset_glob"
        )


def _hf_documents(source: TextSource) -> Iterator[str]:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            f"dataset {source.path!r} needs the `datasets` package: pip install 'hubsae[datasets]'"
        ) from e
    name = source.path[len("hf:") :]
    ds = datasets.load_dataset(name, source.config_name, split=source.split, streaming=source.streaming)
    for row in ds:
        if source.text_column not in row:
            raise KeyError(f"dataset {name!r} has no column {source.text_column!r}; columns: {sorted(row)}")
        yield row[source.text_column]


def split_pieces(text: str, max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Cut a long document at line breaks into pieces of at most ~max_chars characters."""
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def separator_id(tokenizer) -> int | None:
    """The token placed between documents: EOS, else BOS, else nothing."""
    for tok_id in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return None


def token_stream(documents: Iterable[str], tokenizer) -> Iterator[int]:
    """Token ids of the documents, concatenated with a separator token between them."""
    sep = separator_id(tokenizer)
    for i, doc in enumerate(documents):
        if i > 0 and sep is not None:
            yield sep
        for piece in split_pieces(doc):
            yield from tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]


def pack_contexts(tokens: Iterable[int], context_length: int, bos_id: int | None) -> Iterator[Tensor]:
    """Cut a token stream into (context_length,) int64 tensors; the tail shorter than one context is dropped."""
    body = context_length - (1 if bos_id is not None else 0)
    if body <= 0:
        raise ValueError(f"context_length={context_length} leaves no room for text after BOS")
    buf: list[int] = []
    for tok in tokens:
        buf.append(tok)
        if len(buf) == body:
            yield torch.tensor(([bos_id] if bos_id is not None else []) + buf, dtype=torch.long)
            buf = []


def contexts(source: TextSource, tokenizer, context_length: int, prepend_bos: bool = True) -> Iterator[Tensor]:
    """Fixed-length token contexts of a text source; errors if it yields none."""
    bos = None
    if prepend_bos:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if bos is None:
            raise ValueError("prepend_bos=True but the tokenizer has neither a BOS nor an EOS token")
    n_tokens = 0

    def counted() -> Iterator[int]:
        nonlocal n_tokens
        for tok in token_stream(iter_documents(source), tokenizer):
            n_tokens += 1
            yield tok

    n = 0
    for ctx in pack_contexts(counted(), context_length, bos):
        n += 1
        yield ctx
    if n == 0:
        what = "is empty" if n_tokens == 0 else f"has {n_tokens} tokens, shorter than one context of {context_length}"
        raise ValueError(f"dataset {source.path!r} {what}")


def special_token_mask(input_ids: Tensor, tokenizer) -> Tensor:
    """True where a token is one of the tokenizer's special tokens (BOS, EOS, pad, ...)."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=input_ids.dtype)
    return torch.isin(input_ids, special)
