"""Compact transport: stored-dtype buffers, shared slots and the prefetcher equal the int64 path bit for bit."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import streamtok
from streamtok._background import Background
from streamtok._ring import SlotRef, SlotRing
from streamtok.collate import split


def _loader(data, workers, mode="shuffle", **kw):
    return streamtok.loader(
        data, seq_len=31, batch_size=4, split="all", mode=mode, seed=3, epochs=2,
        num_workers=workers, metrics=False, **kw,
    )


@pytest.fixture(params=["uint16", "uint32"])
def data(request, gpt2_dir, shard_dir):
    """GPT-2 uint16 shards, or uint32 shards (llm.c's Llama-3 format) whose ids are positions."""
    directory, tokens = gpt2_dir if request.param == "uint16" else shard_dir
    return directory, tokens, request.param


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
def test_compact_split_equals_int64_path(data, workers, mode):
    directory, tokens, stored = data
    expected = list(_loader(directory, workers, mode))
    compact = list(_loader(directory, workers, mode).iter_compact())
    assert len(compact) == len(expected) > 8  # more batches than ring slots: slots are reused
    want = torch.uint16 if stored == "uint16" else torch.int32
    for buf, (x, y) in zip(compact, expected):
        assert buf.dtype == want and buf.shape == (4, 32)
        cx, cy = split(buf)
        assert torch.equal(cx, x) and torch.equal(cy, y)
        assert x.dtype == torch.int64 and x.is_contiguous() and y.is_contiguous()
    # and every row is really a window of the data
    starts = [int(np.flatnonzero(tokens == int(x[0, 0]))[0]) for x, _ in expected[:3]] if stored == "uint32" else []
    for (x, y), s in zip(expected, starts):
        assert torch.equal(x[0], torch.from_numpy(tokens[s : s + 31].astype(np.int64)))


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_prefetcher_cpu_path_equals_int64_path(data, workers, background):
    directory, _, _ = data
    expected = list(_loader(directory, workers))
    got = list(streamtok.CUDAPrefetcher(_loader(directory, workers), device="cpu", background=background))
    assert len(got) == len(expected)
    for (gx, gy), (x, y) in zip(got, expected):
        assert torch.equal(gx, x) and torch.equal(gy, y)


def test_compact_buffers_stay_intact_while_held(gpt2_dir):
    """iter_compact hands out private copies: holding many does not see slots being refilled."""
    directory, _ = gpt2_dir
    held = list(_loader(directory, 2).iter_compact())
    again = list(_loader(directory, 0).iter_compact())
    assert all(torch.equal(a, b) for a, b in zip(held, again)) and len(held) == len(again)


def test_prefetcher_state_with_background_thread_is_as_consumed(gpt2_dir):
    directory, _ = gpt2_dir
    reference = list(_loader(directory, 2))
    pf = streamtok.CUDAPrefetcher(_loader(directory, 2), device="cpu", depth=3)
    assert pf.background  # on by default with workers
    it = iter(pf)
    for _ in range(5):
        next(it)
    state = pf.state_dict()
    del it
    resumed = _loader(directory, 0)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(reference) - 5
    assert all(torch.equal(a[0], b[0]) for a, b in zip(rest, reference[5:]))


def test_background_reraises_and_stops():
    def boom():
        yield 1
        raise ValueError("bad shard")

    it = Background(boom(), lambda v: v * 10, ahead=1)
    assert next(it) == 10
    with pytest.raises(ValueError, match="bad shard"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_background_thread_ends_when_abandoned():
    before = threading.active_count()
    it = Background(iter(range(10**9)), lambda v: v, ahead=2)
    assert next(it) == 0
    thread = it._thread
    del it  # the consumer broke out of its loop
    thread.join(timeout=5)
    assert not thread.is_alive() and threading.active_count() == before


def test_slot_ring_waits_for_release():
    ring = SlotRing(1, 2, (2, 3), np.dtype(np.uint16))
    ring.acquire(0, 0)[:] = 7
    ring.acquire(0, 1)[:] = 8
    got = []
    writer = threading.Thread(target=lambda: got.append(ring.acquire(0, 2)))  # slot 0 again
    writer.start()
    writer.join(timeout=0.2)
    assert writer.is_alive() and not got  # batch 0 not taken yet: slot 0 is not free
    first = ring.take(SlotRef(0, 0))
    writer.join(timeout=5)
    assert got and not writer.is_alive()
    got[0][:] = 9  # the writer refills slot 0; the copy taken before is unaffected
    assert int(first[0, 0]) == 7 and int(ring.take(SlotRef(0, 1), lambda t: t.sum())) == 8 * 6


@pytest.mark.parametrize("prefetch_factor", [1, 2])
def test_uneven_worker_ends_and_few_slots(gpt2_dir, prefetch_factor):
    """3 workers ending a pass unevenly, with prefetch_factor + 2 slots each: same stream."""
    directory, _ = gpt2_dir
    kw = dict(seq_len=29, batch_size=4, split="all", mode="shuffle", seed=9, epochs=1, metrics=False)
    expected = list(streamtok.loader(directory, num_workers=0, **kw))
    got = list(streamtok.loader(directory, num_workers=3, prefetch_factor=prefetch_factor, **kw))
    assert len(expected) % 3 != 0  # the workers do not all build the same number of batches
    assert len(got) == len(expected)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))


def test_load_state_dict_stops_a_running_background_thread(gpt2_dir):
    directory, _ = gpt2_dir
    reference = list(_loader(directory, 0))
    pf = streamtok.CUDAPrefetcher(_loader(directory, 2), device="cpu", depth=2)
    it = iter(pf)  # kept alive: its thread would keep advancing the loader
    for _ in range(3):
        next(it)
    state = pf.state_dict()
    thread = pf._thread()._thread
    with pytest.raises(streamtok.PassActiveError):  # the pass must end first, as for the loader
        pf.load_state_dict(state)
    it.close()
    pf.load_state_dict(state)
    assert not thread.is_alive()
    rest = list(pf)
    assert len(rest) == len(reference) - 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(rest, reference[3:]))
