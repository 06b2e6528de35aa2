"""Offline labelled text: deterministic sampling, labels that match the files, clear errors."""

import sysconfig
from pathlib import Path

import pytest

from hubsae.data.labelled import FORTUNES_DIR, code_files, code_snippets, fortune_entries, fortunes


def _have_fortunes(*categories: str) -> bool:
    return all((FORTUNES_DIR / c).is_file() for c in categories)


def test_fortune_entries_split_on_percent_lines(tmp_path):
    (tmp_path / "jokes").write_text("first one\n%\nsecond\nline two\n%\n\n%\nthird\n", encoding="utf-8")
    assert fortune_entries("jokes", tmp_path) == ["first one", "second\nline two", "third"]


def test_fortunes_is_deterministic_and_labelled(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).write_text("\n%\n".join(f"{name} entry {i}" for i in range(30)), encoding="utf-8")
    one = fortunes(["a", "b"], per_class=10, seed=3, directory=tmp_path)
    two = fortunes(["a", "b"], per_class=10, seed=3, directory=tmp_path)
    other = fortunes(["a", "b"], per_class=10, seed=4, directory=tmp_path)
    assert one.texts == two.texts and one.texts != other.texts
    assert len(one) == 20 and one.classes == ["a", "b"]
    assert all(text.startswith(one.classes[label]) for text, label in zip(one.texts, one.labels, strict=True))


def test_missing_fortune_category_names_path_and_package(tmp_path):
    (tmp_path / "present").write_text("x\n%\ny\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"'absent'.*fortunes.*present"):
        fortunes(["present", "absent"], directory=tmp_path)


@pytest.mark.skipif(not _have_fortunes("computers", "food"), reason="Debian package 'fortunes' not installed")
def test_installed_fortunes():
    data = fortunes(["computers", "food"], per_class=20, seed=0)
    assert data.labels.count(0) == 20 and data.labels.count(1) == 20
    assert set(data.sources) == {str(FORTUNES_DIR / "computers"), str(FORTUNES_DIR / "food")}


def test_python_snippets_come_from_the_stdlib_and_repeat():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    one = code_snippets(["python"], per_class=8, seed=1)
    assert one.texts == code_snippets(["python"], per_class=8, seed=1).texts
    assert len(one) == 8 and len(set(one.sources)) == 8
    for text, source in zip(one.texts, one.sources, strict=True):
        assert Path(source).is_relative_to(stdlib) and source.endswith(".py")
        assert text in Path(source).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")


def test_unknown_language_is_an_error():
    with pytest.raises(ValueError, match="'cobol'"):
        code_files("cobol")


@pytest.mark.skipif(not Path("/usr/include/stdio.h").is_file(), reason="no C headers (libc6-dev) here")
def test_c_and_python_labels():
    data = code_snippets(["python", "c"], per_class=5, seed=0)
    assert data.classes == ["python", "c"]
    assert all(s.endswith(".h") for s, y in zip(data.sources, data.labels, strict=True) if y == 1)
