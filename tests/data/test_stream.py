import os
import stat

import pytest
import torch

from hubsae.data import (
    ActivationStream,
    DataPosition,
    cache_blocks,
    harvest_blocks,
    read_index,
    tensor_blocks,
    write_cache,
)
from hubsae.data.text import TextSource, contexts


def _data(n=100, d=4):
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(n, d, generator=g), "b": torch.randn(n, d + 1, generator=g)}


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_every_row_of_an_epoch_appears_once_and_hookpoints_stay_aligned():
    data = _data()
    data["b"][:, 0] = torch.arange(100.0)  # row ids
    stream = ActivationStream(tensor_blocks(data, block_rows=50), batch_size=10, seed=3)
    batches = [b for _, b in _take(stream(), 10)]
    ids = torch.cat([b["b"][:, 0] for b in batches]).long()
    assert sorted(ids.tolist()) == list(range(100))
    for b in batches:
        torch.testing.assert_close(b["a"], data["a"][b["b"][:, 0].long()])


def test_resuming_from_a_position_continues_the_same_sequence():
    data = _data()
    stream = ActivationStream(tensor_blocks(data, block_rows=30), batch_size=7, seed=1)
    ref = _take(stream(), 12)  # crosses block and epoch boundaries (4 batches a block, 3 blocks)
    for cut in (1, 3, 4, 5, 11):
        pos = ref[cut - 1][0]
        rest = _take(stream(pos), 12 - cut)
        for (p1, b1), (p2, b2) in zip(ref[cut:], rest, strict=True):
            assert p1 == p2
            torch.testing.assert_close(b1["a"], b2["a"], rtol=0, atol=0)
    assert ref[3][0] == DataPosition(0, 1, 0) and ref[11][0] == DataPosition(0, 3, 0)


def test_row_shards_of_two_ranks_make_up_the_global_batch():
    data = _data()
    full = ActivationStream(tensor_blocks(data, 40), batch_size=8, seed=2)
    r0 = ActivationStream(tensor_blocks(data, 40), batch_size=4, seed=2, row_shard=(0, 2))
    r1 = ActivationStream(tensor_blocks(data, 40), batch_size=4, seed=2, row_shard=(1, 2))
    for (_, g), (_, a), (_, b) in zip(_take(full(), 6), _take(r0(), 6), _take(r1(), 6), strict=True):
        torch.testing.assert_close(torch.cat([a["a"], b["a"]]), g["a"], rtol=0, atol=0)


def test_no_full_batch_is_an_error():
    stream = ActivationStream(tensor_blocks(_data(n=20), block_rows=20), batch_size=32)
    with pytest.raises(ValueError, match="no batch of 32"):
        next(stream())


def test_harvest_blocks_skip_without_changing_content(tiny_lm):
    model, tok, _, corpus = tiny_lm
    blocks = harvest_blocks(
        model, tok, lambda: contexts(TextSource(str(corpus)), tok, 16), ["model.layers.1"], 8, model_batch_size=3
    )
    every = list(blocks(0, 0))
    later = list(blocks(0, 2))
    assert [i for i, _ in later] == [i for i, _ in every][2:]
    torch.testing.assert_close(later[0][1]["model.layers.1"], every[2][1]["model.layers.1"], rtol=0, atol=0)
    # BOS is excluded: 8 contexts x 15 text tokens, minus separators that are special tokens
    n_special = sum(int((c == tok.eos_token_id).sum()) for c in list(contexts(TextSource(str(corpus)), tok, 16))[:8])
    assert every[0][1]["model.layers.1"].shape == (8 * 15 - n_special, 32)


def test_disk_cache_round_trip(tmp_path, tiny_lm):
    model, tok, _, corpus = tiny_lm
    hps = ["model.layers.0", "model.layers.1"]
    blocks = harvest_blocks(model, tok, lambda: contexts(TextSource(str(corpus)), tok, 16), hps, 8, 4)
    index = write_cache(blocks(0, 0), tmp_path / "cache", max_tokens=300, metadata={"model": "tiny"})
    assert read_index(tmp_path / "cache") == index
    assert index["hookpoints"] == {"model.layers.0": 32, "model.layers.1": 32}
    assert index["n_tokens"] >= 300 and len(index["shards"]) == 3
    live = list(blocks(0, 1))[:2]
    cached = list(cache_blocks(tmp_path / "cache", ["model.layers.1"])(0, 1))
    assert [i for i, _ in cached] == [1, 2]
    for (_, a), (_, b) in zip(live, cached, strict=True):
        torch.testing.assert_close(a["model.layers.1"], b["model.layers.1"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no hookpoints"):
        cache_blocks(tmp_path / "cache", ["model.layers.2"])
    with pytest.raises(FileNotFoundError, match="index.json"):
        read_index(tmp_path)


def test_a_large_dropped_tail_is_warned_about(caplog):
    stream = ActivationStream(tensor_blocks(_data(n=100), block_rows=100), batch_size=64)
    next(stream())
    assert "36% is dropped" in caplog.text
    caplog.clear()
    next(ActivationStream(tensor_blocks(_data(n=100), block_rows=100), batch_size=50)())
    assert "dropped" not in caplog.text


def test_cache_shards_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_cache(tensor_blocks(_data(), 25)(0, 0), tmp_path / "cache", 10**9, {})
    finally:
        os.umask(old)
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 5 and {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}
