"""Binary or non-UTF-8 files as a dataset are refused, naming the file, instead of being trained on
as replacement characters (a gzip file used to train to exit 0 with a byte-level tokenizer)."""

import gzip
import logging
import zipfile

import pytest

from hubsae.data.text import TEXT_CHECK_BYTES, TextSource, contexts, iter_documents
from hubsae.train import TrainConfig, Trainer

TEXT = "When in the course of human events it becomes necessary for one people.\n" * 200


def _documents(path, glob: str = "**/*.txt") -> list[str]:
    return list(iter_documents(TextSource(str(path), glob=glob)))


def test_a_gzip_file_is_refused_naming_the_file_and_the_format(tmp_path):
    path = tmp_path / "corpus.txt.gz"
    path.write_bytes(gzip.compress(TEXT.encode()))
    with pytest.raises(ValueError, match=rf"dataset file '{path}' is not UTF-8 text: .*looks like a gzip file"):
        _documents(path)


def test_a_zip_file_is_refused(tmp_path):
    path = tmp_path / "corpus.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", TEXT)
    with pytest.raises(ValueError, match=r"is not UTF-8 text.*looks like a zip file"):
        _documents(path)


@pytest.mark.parametrize(
    ("blob", "problem"),
    [
        (b"ELF\x02\x01\x01\x00\x00binary", r"a NUL byte at byte 6"),
        ("hello wörld".encode("utf-16"), r"a NUL byte"),  # UTF-16 is not UTF-8
        ("café crème\n".encode("latin-1"), r"invalid UTF-8 at byte 3 \(b'\\xe9'\)"),
    ],
)
def test_nul_bytes_and_other_encodings_are_refused(tmp_path, blob, problem):
    path = tmp_path / "data.txt"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=problem):
        _documents(path)


def test_one_binary_file_in_a_folder_is_named(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_bytes(gzip.compress(TEXT.encode()))
    with pytest.raises(ValueError, match=rf"'{tmp_path / 'b.txt'}' is not UTF-8 text"):
        _documents(tmp_path)
    assert _documents(tmp_path, glob="a.txt") == [TEXT]


def test_utf8_text_loads_unchanged_even_with_a_character_cut_by_the_first_block(tmp_path):
    text = "a" * (TEXT_CHECK_BYTES - 1) + "é日本" + TEXT  # é's two bytes straddle the block's end
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    assert _documents(path) == [text]


def test_a_stray_byte_after_the_first_block_is_replaced_with_a_warning(tmp_path, caplog):
    path = tmp_path / "t.txt"
    path.write_bytes(TEXT.encode() * 2 + b"\xff" + b"tail\n")
    with caplog.at_level(logging.WARNING, logger="hubsae.data.text"):
        (doc,) = _documents(path)
    assert doc.endswith("\ufffdtail\n") and doc.count("\ufffd") == 1
    assert "1 invalid UTF-8 sequence(s)" in caplog.text and str(path) in caplog.text


def test_contexts_and_training_stop_at_a_binary_dataset(tmp_path, tiny_lm):
    model, tok, model_dir, _ = tiny_lm
    path = tmp_path / "corpus.gz"
    path.write_bytes(gzip.compress(TEXT.encode() * 20))
    with pytest.raises(ValueError, match=r"corpus.gz' is not UTF-8 text"):
        next(contexts(TextSource(str(path)), tok, 16))
    cfg = TrainConfig(
        model=str(model_dir), dataset=str(path), hookpoints=["model.layers.1"], context_length=16,
        buffer_contexts=16, model_batch_size=8, batch_size=64, max_tokens=64 * 4, sae={"k": 4},
        log_every=0, progress_bar=False, output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"corpus.gz' is not UTF-8 text.*gzip"):
        Trainer(cfg, model=model, tokenizer=tok).train()
    assert not (tmp_path / "run" / "model.layers.1").exists()
