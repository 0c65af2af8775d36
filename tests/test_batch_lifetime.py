"""A batch never changes after it is handed out: held batches equal a clean run, for every
stored/output dtype pair, batch size 1 and 2, with and without workers and the prefetcher.

With workers a batch is built in a shared slot that a worker refills once the trainer has
released it; a batch of one row in the output dtype used to be a *view* of that slot.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _util import make_shards

import streamtok
from streamtok._ring import SlotRef, SlotRing

T = 15
# (shard kind, stored dtype): llm.c .bin holds uint16 or uint32; .npy any integer dtype.
STORED = [("llmc", np.uint16), ("llmc", np.uint32), ("npy", np.int32), ("npy", np.int64), ("npy", np.uint64)]


@pytest.fixture(scope="module", params=STORED, ids=lambda p: f"{p[0]}-{np.dtype(p[1]).name}")
def data(request, tmp_path_factory):
    kind, dtype = request.param
    directory = tmp_path_factory.mktemp(f"lifetime_{np.dtype(dtype).name}")
    make_shards(directory, [1000], kind=kind, dtype=dtype)  # token i is i
    return directory


def _loader(directory, batch_size, dtype, workers, **kw):
    return streamtok.loader(
        directory, seq_len=T, batch_size=batch_size, split="all", mode="shuffle", seed=5, epochs=1,
        num_workers=workers, dtype=dtype, metrics=False, **kw,
    )


def _check_held(held, ref, dtype):
    assert len(held) == len(ref) > 8 * 2  # more batches than the 2 workers' slots: slots are reused
    for (x, y), (rx, ry) in zip(held, ref):
        assert x.dtype == y.dtype == dtype
        assert torch.equal(x, rx) and torch.equal(y, ry)
        assert not np.shares_memory(x.numpy(), y.numpy())


@pytest.mark.parametrize("prefetch", [False, True], ids=["loader", "prefetcher"])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32], ids=["int64", "int32"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_held_batches_equal_a_clean_run(data, batch_size, dtype, workers, prefetch):
    ref = [(x.clone(), y.clone()) for x, y in _loader(data, batch_size, dtype, 0)]
    for x, y in ref:  # the clean run itself: rows are real windows (token i is i)
        assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)
    loader = _loader(data, batch_size, dtype, workers)
    held = list(streamtok.CUDAPrefetcher(loader, device="cpu") if prefetch else loader)  # every batch kept
    _check_held(held, ref, dtype)


@pytest.mark.parametrize("workers", [0, 2])
def test_compact_buffers_held_equal_a_clean_run(data, workers):
    ref = [b.clone() for b in _loader(data, 1, torch.int64, 0).iter_compact()]
    held = list(_loader(data, 1, torch.int64, workers).iter_compact())
    assert len(held) == len(ref) > 16 and all(torch.equal(a, b) for a, b in zip(held, ref))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("compact", [False, True])
def test_pinned_batches_are_the_pinned_copies(data, monkeypatch, workers, compact):
    """pin_memory: streamtok's own copy of each batch lands in pinned memory, once, and the
    DataLoader's pin thread is not used (CUDA faked: pinned allocations are recorded)."""
    real_empty, pinned = torch.empty, set()

    def empty(*args, pin_memory=False, **kw):
        t = real_empty(*args, **kw)
        if pin_memory:
            pinned.add(t.data_ptr())
        return t

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "empty", empty)
    loader = _loader(data, 1, torch.int64, workers, pin_memory=True)
    assert loader.pin_memory is False and loader.pin_batches  # no (worker, n) pairs pinned by torch
    if compact:
        ref = [b.clone() for b in _loader(data, 1, torch.int64, 0).iter_compact()]
        held = list(loader.iter_compact())
        assert all(torch.equal(a, b) for a, b in zip(held, ref)) and len(held) == len(ref)
        handed = held
    else:
        ref = [(x.clone(), y.clone()) for x, y in _loader(data, 1, torch.int64, 0)]
        held = list(loader)
        _check_held(held, ref, torch.int64)
        handed = [t for pair in held for t in pair]
    assert all(t.data_ptr() in pinned for t in handed)
    assert len(pinned) == len(handed)  # one pinned copy per tensor handed out, no second one


def test_take_copies_a_view_of_the_slot_before_release():
    ring = SlotRing(1, 2, (1, 4), np.dtype(np.int64))
    ring.acquire(0, 0)[:] = torch.arange(4)
    got = ring.take(SlotRef(0, 0), lambda slot: (slot[:, :-1], slot[:, 1:]))  # views, as numpy gave
    ring.acquire(0, 2)[:] = -1  # the worker refills slot 0 once it is released
    assert torch.equal(got[0], torch.tensor([[0, 1, 2]])) and torch.equal(got[1], torch.tensor([[1, 2, 3]]))
