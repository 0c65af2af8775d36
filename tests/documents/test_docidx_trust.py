"""A document index is used only for the bytes it was built from (issue 19, items 5 and 10)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import streamtok
from streamtok import ShardFormatError
from streamtok._formats import write_shard
from streamtok.documents.sidecar import GPT2_EOT, document_starts, scan_document_starts, sidecar_paths, write_document_index


def _shard(path, n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 50_000, n, dtype=np.uint16)
    tokens[rng.choice(n, 300, replace=False)] = GPT2_EOT
    write_shard(path, tokens)
    return tokens


def _edit_keeping_mtime(path, token_at: int, value: int) -> None:
    st = os.stat(path)
    with open(path, "r+b") as f:  # same size, far from the first, middle and last 64 KiB
        f.seek(1024 + 2 * token_at)
        f.write(np.array([value], dtype=np.uint16).tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `rsync -t` or a restore keeps it


@pytest.mark.parametrize("portable", [False, True])
def test_a_same_size_edit_with_the_mtime_kept_rebuilds_the_index(tmp_path, portable):
    path = tmp_path / "s.bin"
    tokens = _shard(path)
    write_document_index(path, portable=portable)
    assert np.array_equal(document_starts(path), np.flatnonzero(tokens == GPT2_EOT))
    at = 50_000 if tokens[50_000] != GPT2_EOT else 50_001
    _edit_keeping_mtime(path, at, GPT2_EOT)  # a new document start
    got = np.asarray(document_starts(path))
    assert at in got.tolist()
    assert np.array_equal(got, scan_document_starts(path, GPT2_EOT))


def test_mask_batches_follow_an_edited_shard_not_its_old_index(tmp_path):
    data = tmp_path / "d"
    tokens = _shard(data / "s_000000.bin")
    kw = dict(seq_len=64, batch_size=4, split="all", mode="sequential", documents="mask", metrics=False)
    list(streamtok.loader(data, **kw))  # builds the index
    at = next(i for i in range(60_000, 70_000) if tokens[i] != GPT2_EOT and i % 64 not in (0, 63))
    _edit_keeping_mtime(data / "s_000000.bin", at, GPT2_EOT)
    loader = streamtok.loader(data, **kw)
    step = at // (64 * 4)
    for k, (x, _y, doc) in enumerate(loader):
        if k == step:
            row, col = divmod(at - step * 256, 64)
            assert int(x[row, col]) == GPT2_EOT
            assert (row * 64 + col) in doc.cu_seqlens.tolist()  # the new document starts there
            break


def test_a_copied_dataset_keeps_its_index(tmp_path):
    path = tmp_path / "a" / "s.bin"
    path.parent.mkdir()
    tokens = _shard(path)
    index = write_document_index(path, portable=True)
    copy = tmp_path / "b"
    shutil.copytree(path.parent, copy)  # new inodes, new ctimes: checked once against the bytes
    before = (copy / index.name).read_bytes()
    assert np.array_equal(document_starts(copy / "s.bin"), np.flatnonzero(tokens == GPT2_EOT))
    assert (copy / index.name).read_bytes() == before  # used, not rebuilt


@pytest.mark.parametrize("damage", ["entry", "order"])
def test_an_index_with_a_valid_key_and_damaged_entries_is_named(tmp_path, damage):
    path = tmp_path / "s.bin"
    _shard(path)
    index = write_document_index(path)
    arr = np.load(index)
    if damage == "entry":
        arr[8 + 5] = 10**12  # far past the shard's end (IndexError in a lookup before)
    else:
        arr[8 + 5], arr[8 + 6] = arr[8 + 6], arr[8 + 5]
    with open(index, "wb") as f:
        np.lib.format.write_array(f, arr)
    with pytest.raises(ShardFormatError, match=r"s\.bin\.docidx: .*damaged"):
        document_starts(path)
    with pytest.raises(ShardFormatError, match=r"s\.bin\.docidx"):
        streamtok.loader(tmp_path, seq_len=64, batch_size=4, split="all", documents="bos", metrics=False)
    assert sidecar_paths(path)[0] == index
