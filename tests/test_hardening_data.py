"""Data is never silently misread: foreign files, shards changed under a running loader, bad ids, swapped data."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from _util import make_shards, read_after_truncation

import streamtok
from streamtok import ShardFormatError, StateMismatchError, TokenRangeError
from streamtok._formats import HEADER_INTS


def _llmc_like(path, magic: int, version: int = 1, words: int = 3000) -> None:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (magic, version, 10)
    body = np.arange(words, dtype=np.uint16)
    path.write_bytes(header.tobytes() + body.tobytes())


@pytest.mark.parametrize(
    "magic, what",
    [
        (20240522, "eval file"),
        (20240326, "model checkpoint"),
        (20240327, "debug-state file"),
        (20240328, "tokenizer file"),
        (20240527, "training-state checkpoint"),
    ],
)
def test_llmc_files_that_are_not_token_shards_are_named(tmp_path, magic, what):
    path = tmp_path / "hellaswag_val.bin"
    _llmc_like(path, magic)
    with pytest.raises(ShardFormatError, match=rf"hellaswag_val\.bin: starts with llm\.c magic {magic}: it is .*{what}"):
        streamtok.MemmapReader(path)
    with pytest.raises(ShardFormatError, match="not a token shard"):
        streamtok.loader(tmp_path, seq_len=8, batch_size=2, split="all")


def test_a_litdata_dataset_is_refused_not_read_raw(tmp_path):
    data = tmp_path / "optimized"
    data.mkdir()
    (data / "index.json").write_text(json.dumps({"chunks": [{"filename": "chunk-0-0.bin"}], "config": {}}))
    (data / "chunk-0-0.bin").write_bytes(np.arange(4000, dtype=np.uint16).tobytes())
    with pytest.raises(ShardFormatError, match="LitData optimized dataset"):
        streamtok.loader(data, seq_len=8, batch_size=2, split="all")
    with pytest.raises(ShardFormatError, match="chunk of a LitData"):
        streamtok.MemmapReader([data / "chunk-0-0.bin"])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_truncated_while_reading_is_an_error_not_sigbus(tmp_path, workers):
    make_shards(tmp_path / "d", [40_000, 40_000], dtype=np.uint16)
    done = read_after_truncation(
        f"""loader = streamtok.loader({str(tmp_path / "d")!r}, seq_len=64, batch_size=8, split="all",
                                  mode="sequential", num_workers={workers}, epochs=None, metrics=False)""",
        "os.truncate(loader.collator.reader.paths[0], 1024 + 2 * 1000)  # being read; `cp new.bin shard.bin` truncates first")
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "shard_000000.bin: the file changed" in done.stdout


def test_negative_ids_from_a_signed_npy_are_refused_with_vocab_size(tmp_path):
    tokens = np.arange(5000, dtype=np.int64)
    tokens[1234] = -7
    np.save(tmp_path / "train.npy", tokens)
    loader = streamtok.loader(tmp_path, seq_len=50, batch_size=4, split="all", mode="sequential", vocab_size=50257)
    with pytest.raises(TokenRangeError, match=r"train\.npy: token -7 at token offset 1234 is negative"):
        list(loader)
    too_big = np.arange(5000, dtype=np.int64)
    np.save(tmp_path / "train.npy", too_big)
    assert len(list(streamtok.loader(tmp_path, seq_len=50, batch_size=4, split="all", vocab_size=5000)))


def test_a_swapped_dataset_with_the_same_names_and_sizes_is_refused(tmp_path):
    make_shards(tmp_path / "a", [3000, 3000], dtype=np.uint16)
    make_shards(tmp_path / "b", [3000, 3000], dtype=np.uint16, start=7)  # same names and sizes
    kw = dict(seq_len=32, batch_size=4, split="all", seed=1)
    first = streamtok.loader(tmp_path / "a", **kw)
    it = iter(first)
    next(it)
    it.close()
    state = json.loads(json.dumps(first.state_dict()))
    with pytest.raises(StateMismatchError, match="data="):
        streamtok.loader(tmp_path / "b", **kw).load_state_dict(state)
    moved = tmp_path / "elsewhere" / "a"
    shutil.copytree(tmp_path / "a", moved)
    os.utime(moved / "shard_000000.bin", (0, 0))  # another mtime: content is what counts
    streamtok.loader(moved, **kw).load_state_dict(state)  # moving the directory still resumes


def test_a_directory_or_a_symlink_loop_named_like_a_shard_is_named(tmp_path):
    make_shards(tmp_path / "d", [3000], dtype=np.uint16)
    (tmp_path / "d" / "sub.bin").mkdir()
    with pytest.raises(ShardFormatError, match=r"sub\.bin: is a directory"):
        streamtok.loader(tmp_path / "d", seq_len=8, batch_size=2, split="all")
    loop = tmp_path / "e" / "loop.bin"
    loop.parent.mkdir()
    os.symlink(loop, loop)
    with pytest.raises(ShardFormatError, match=r"loop\.bin: cannot be opened as a shard"):
        streamtok.MemmapReader(str(loop))
