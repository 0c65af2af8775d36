"""Page-cache hints: madvise per mode, lookahead, and willneed's merged ranges (correctness only)."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
import torch

import streamtok
from streamtok._pagehints import resident
from streamtok.errors import ConfigError


class _Spy:
    """Stands in for a shard's mmap in the reader's LRU and records madvise calls."""

    def __init__(self, mm):
        self.mm, self.calls = mm, []

    def madvise(self, flag, start=0, length=None):
        self.calls.append((flag, start, length))
        return self.mm.madvise(flag, start, length) if length is not None else self.mm.madvise(flag)


def _spied(reader):
    spies = {}
    for k in range(len(reader.infos)):
        reader.shard_array(k)
        entry = reader._maps[k]
        spies[k] = entry.mm = _Spy(entry.mm)
    reader._hints._hint_calls = 10**9  # hint even though the tiny test files are cached
    return spies


@pytest.mark.parametrize("advice", [None, "normal", "random", "sequential"])
def test_advice_is_accepted_and_data_unchanged(shard_dir, advice):
    directory, tokens = shard_dir
    reader = streamtok.MemmapReader(sorted(directory.iterdir()), advice=advice)
    starts = np.array([0, 4990, 8000, 14000], dtype=np.int64)  # 4990 crosses the first shard end
    out = np.empty((4, 50), dtype=np.int64)
    reader.gather(starts, 50, out)
    assert all(np.array_equal(out[i], tokens[s : s + 50]) for i, s in enumerate(starts))


def test_bad_hints_are_refused(shard_dir):
    directory, _ = shard_dir
    with pytest.raises(ConfigError, match="advice"):
        streamtok.MemmapReader(directory, advice="soon")
    with pytest.raises(ConfigError, match="lookahead"):
        streamtok.MemmapReader(directory, lookahead=-1)


def test_willneed_merges_adjacent_windows_into_one_call(shard_dir):
    directory, _ = shard_dir
    reader = streamtok.MemmapReader(directory)
    spies = _spied(reader)
    reader.willneed(np.array([0, 100, 200, 300], dtype=np.int64), 101)  # back to back, one shard
    calls = spies[0].calls
    assert len(calls) == 1
    flag, start, length = calls[0]
    info = reader.infos[0]
    assert flag == mmap.MADV_WILLNEED and start % mmap.PAGESIZE == 0
    assert start <= info.offset and start + length >= info.offset + 401 * 4


def test_willneed_covers_far_windows_and_shard_crossings(shard_dir):
    directory, _ = shard_dir
    reader = streamtok.MemmapReader(directory)
    spies = _spied(reader)
    length, starts = 60, np.array([4980, 100, 12000], dtype=np.int64)  # 4980 runs into shard 1
    reader.willneed(starts, length)
    covered = {k: [(s, s + n) for _, s, n in spy.calls] for k, spy in spies.items()}
    for s in starts.tolist():
        k = int(reader.locate(np.array([s]))[0])
        lo, left = s - int(reader.offsets[k]), length
        while left:
            info = reader.infos[k]
            n = min(left, info.n_tokens - lo)
            b, e = info.offset + lo * 4, info.offset + (lo + n) * 4
            assert any(cb <= b and e <= ce for cb, ce in covered[k]), (s, k, covered[k])
            k, lo, left = k + 1, 0, left - n
    assert all(start % mmap.PAGESIZE == 0 for spy in spies.values() for _, start, _ in spy.calls)


def test_willneed_skips_cached_pages(gpt2_dir):
    directory, _ = gpt2_dir
    reader = streamtok.MemmapReader(directory)
    spies = _spied(reader)
    reader._hints._hint_calls = 0
    arr = reader.shard_array(0)
    int(arr[:2000].sum())  # touch: the pages are cached (and mapped) now
    assert resident(arr.__array_interface__["data"][0]) is True
    reader.willneed(np.array([0, 100], dtype=np.int64), 50)
    assert spies[0].calls == []


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("mode", ["shuffle", "sequential"])
def test_lookahead_does_not_change_the_stream(shard_dir, workers, mode):
    directory, _ = shard_dir
    kw = dict(seq_len=40, batch_size=3, split="all", mode=mode, seed=1, num_workers=workers, metrics=False)
    plain = list(streamtok.loader(directory, advice=None, lookahead=0, **kw))
    hinted = streamtok.loader(directory, advice="random", lookahead=3, **kw)
    hinted.collator.reader._hints._hint_calls = 10**9  # force the hints (the files are cached)
    got = list(hinted)
    assert len(got) == len(plain) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, plain))


@pytest.mark.parametrize(
    "mode, advice, lookahead",
    [("shuffle", "random", 8), ("random", "random", 8), ("sequential", "sequential", 0)],
)
def test_loader_defaults_hints_by_mode(shard_dir, mode, advice, lookahead):
    directory, _ = shard_dir
    ld = streamtok.loader(directory, seq_len=40, batch_size=3, mode=mode, metrics=False)
    assert (ld.collator.reader.advice, ld.collator.reader.lookahead) == (advice, lookahead)
    own = streamtok.loader(directory, seq_len=40, batch_size=3, mode=mode, advice=None, lookahead=2, metrics=False)
    assert (own.collator.reader.advice, own.collator.reader.lookahead) == (None, 2)
