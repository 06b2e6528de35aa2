import pytest
import torch

from hubsae.data.text import TextSource, contexts, pack_contexts, special_token_mask, split_pieces, token_stream


def test_pack_contexts_prepends_bos_and_drops_the_tail():
    out = list(pack_contexts(range(10), context_length=4, bos_id=99))
    assert [c.tolist() for c in out] == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]]
    raw = list(pack_contexts(range(10), context_length=4, bos_id=None))
    assert [c.tolist() for c in raw] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_documents_are_joined_with_a_separator(tiny_lm):
    _, tok, _, _ = tiny_lm
    ids = list(token_stream(["king queen", "sword"], tok))
    expected = (
        tok("king queen", add_special_tokens=False)["input_ids"]
        + [tok.eos_token_id]
        + tok("sword", add_special_tokens=False)["input_ids"]
    )
    assert ids == expected


def test_contexts_of_a_folder_match_tokenizing_its_files(tiny_lm):
    _, tok, _, corpus = tiny_lm
    ctxs = list(contexts(TextSource(str(corpus)), tok, context_length=16))
    files = sorted(corpus.glob("*.txt"))
    stream = []
    for i, f in enumerate(files):
        if i:
            stream.append(tok.eos_token_id)
        stream += tok(f.read_text(), add_special_tokens=False)["input_ids"]
    assert len(ctxs) == len(stream) // 15
    assert all(c[0] == tok.bos_token_id and c.shape == (16,) for c in ctxs)
    assert torch.cat([c[1:] for c in ctxs]).tolist() == stream[: 15 * len(ctxs)]


def test_split_pieces_cuts_at_line_breaks():
    text = "\n".join(f"line {i}" for i in range(1000))
    pieces = list(split_pieces(text, max_chars=100))
    assert "".join(pieces) == text
    assert all(len(p) <= 100 for p in pieces)
    assert all(p.endswith("\n") for p in pieces[:-1])


def test_empty_and_too_short_datasets_are_errors(tmp_path, tiny_lm):
    _, tok, _, _ = tiny_lm
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        list(contexts(TextSource(str(tmp_path / "empty.txt")), tok, 16))
    (tmp_path / "short.txt").write_text("king queen")
    with pytest.raises(ValueError, match="shorter than one context of 16"):
        list(contexts(TextSource(str(tmp_path / "short.txt")), tok, 16))
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        list(contexts(TextSource(str(tmp_path / "nope")), tok, 16))
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="no files matching"):
        list(contexts(TextSource(str(tmp_path / "sub")), tok, 16))


def test_hf_dataset_without_datasets_installed_says_how_to_install(tiny_lm):
    try:
        import datasets  # noqa: F401
    except ImportError:
        _, tok, _, _ = tiny_lm
        with pytest.raises(ImportError, match=r"hubsae\[datasets\]"):
            list(contexts(TextSource("hf:some/dataset"), tok, 16))
    else:
        pytest.skip("datasets is installed; the plain-text path is what CI tests")


def test_special_token_mask(tiny_lm):
    _, tok, _, _ = tiny_lm
    ids = torch.tensor([[tok.bos_token_id, 5, 6, tok.eos_token_id]])
    assert special_token_mask(ids, tok).tolist() == [[True, False, False, True]]
