"""CUDAPrefetcher's CUDA bookkeeping, checked on CPU with ``torch.cuda`` replaced by a recorder.

The stand-in keeps a current device and stream per thread, as CUDA does, and refuses to enter
a stream of another device than the current one (the real ``torch.cuda.stream`` would switch
devices, and switching back from a thread's initial device 0 makes a context on GPU 0). Its
streams have ``wait_event`` only: a ``wait_stream`` call fails. The batches are tensors that
log each move to the device, so the log shows which device and stream each copy ran under,
which event followed it, and which event the consumer waited for before it got the batch.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import namedtuple

import pytest
import torch

import streamtok._staging
from streamtok import ConfigError, CUDAPrefetcher

Pair = namedtuple("Pair", "x y")


class FakeStream:
    def __init__(self, cuda, device, name):
        self.cuda, self.device, self.name = cuda, device, name

    def wait_event(self, event):
        self.cuda.note("wait", self.name, event.batch)


class FakeEvent:
    def __init__(self, cuda):
        self.cuda, self.batch = cuda, None

    def record(self, stream):
        self.batch = self.cuda.local.last_moved  # the copy queued just before on this thread
        self.cuda.note("record", stream.name, self.batch)


class FakeCUDA:
    """What the prefetcher calls of ``torch.cuda``, recording each call with its thread's state."""

    def __init__(self, count=2):
        self.count, self.log, self.local = count, [], threading.local()
        self.compute = {}

    def note(self, *entry):
        stream = getattr(self.local, "stream", None)
        self.log.append((threading.current_thread().name, self.current_device(), stream and stream.name, *entry))

    def is_available(self):
        return True

    def device_count(self):
        return self.count

    def current_device(self):
        return getattr(self.local, "device", 0)  # a new thread starts on device 0

    def set_device(self, index):
        self.note("set_device", index)
        self.local.device = index

    @contextlib.contextmanager
    def device(self, index):
        before = self.current_device()
        self.local.device = index
        try:
            yield
        finally:
            self.local.device = before

    @contextlib.contextmanager
    def stream(self, s):
        assert s.device.index == self.current_device(), "entered a stream of another device"
        before = getattr(self.local, "stream", None)
        self.local.stream = s
        try:
            yield
        finally:
            self.local.stream = before

    def Stream(self, device):
        self.note("new_stream", device.index)
        return FakeStream(self, device, "side")

    def Event(self):
        return FakeEvent(self)

    def current_stream(self, device):
        return self.compute.setdefault(device.index, FakeStream(self, device, f"compute{device.index}"))


class Tagged(torch.Tensor):
    """A CPU tensor standing for a host batch: ``.to`` logs the move, ``record_stream`` the stream."""

    cuda: FakeCUDA

    @staticmethod
    def make(k):
        t = torch.Tensor._make_subclass(Tagged, torch.full((2,), k))
        t.tag = k
        return t

    def to(self, device, non_blocking=False):
        self.cuda.local.last_moved = self.tag
        self.cuda.note("to", str(device), self.tag, non_blocking)
        return Tagged.make(self.tag)

    def record_stream(self, stream):
        self.cuda.note("record_stream", stream.name, self.tag)


class Source:
    """Batches ``Pair(k, k)``; its state is how many it has made."""

    def __init__(self, n):
        self.n, self.made = n, 0

    def __iter__(self):
        for k in range(self.n):
            self.made = k + 1
            yield Pair(Tagged.make(k), Tagged.make(k))

    def state_dict(self):
        return {"made": self.made}


@pytest.fixture
def fake(monkeypatch):
    cuda = FakeCUDA()
    monkeypatch.setattr(streamtok._staging, "_cuda", cuda)
    monkeypatch.setattr(Tagged, "cuda", cuda, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return cuda


@pytest.mark.parametrize("background", [False, True])
def test_stages_enter_the_fixed_device_and_wait_for_their_own_event(fake, monkeypatch, background):
    monkeypatch.setenv("LOCAL_RANK", "1")  # built before torch.cuda.set_device(1): current is 0
    pf = CUDAPrefetcher(Source(6), device="cuda", depth=2, background=background)
    assert pf.device == torch.device("cuda", 1)
    consumer, got, marks = threading.current_thread().name, [], []
    for batch in pf:
        assert type(batch) is Pair and batch.x.tag == batch.y.tag
        got.append((batch.x.tag, pf.state_dict()["made"]))
        marks.append(len(fake.log))
    assert got == [(k, k + 1) for k in range(6)]  # the state goes with its batch, not the ones ahead
    assert fake.current_device() == 0  # the consumer's own current device is left alone

    log = fake.log
    assert [e[4] for e in log if e[3] == "new_stream"] == [1] and log[0][1] == 1  # made on cuda:1, entered
    moves = [e for e in log if e[3] == "to"]
    assert len(moves) == 12 and all(e[1:3] == (1, "side") and e[4] == "cuda:1" and e[6] for e in moves)
    records = [e for e in log if e[3] == "record"]
    assert [(e[1], e[4], e[5]) for e in records] == [(1, "side", k) for k in range(6)]  # one per batch
    stager = moves[0][0]
    assert (stager != consumer) == background and all(e[0] == stager for e in moves + records)
    if background:
        first = next(i for i, e in enumerate(log) if e[0] == stager)
        assert log[first][3:] == ("set_device", 1)  # the thread's device is set before anything
    waits = [(i, e) for i, e in enumerate(log) if e[3] == "wait"]
    assert [(e[0], e[4], e[5]) for _, e in waits] == [(consumer, "compute1", k) for k in range(6)]
    for k, mark in enumerate(marks):  # batch k was handed out right after waiting for its event
        assert max(e[5] for i, e in waits if i < mark) == k
    kept = [e for e in log if e[3] == "record_stream"]
    assert len(kept) == 12 and all(e[0] == consumer and e[4] == "compute1" for e in kept)


def test_device_index_resolution(fake, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fake.set_device(1)
        assert streamtok._staging.resolve_device("cuda") == torch.device("cuda", 1)  # current device
        monkeypatch.setenv("LOCAL_RANK", "0")
        assert streamtok._staging.resolve_device("cuda") == torch.device("cuda", 0)  # LOCAL_RANK wins
        assert streamtok._staging.resolve_device(None) == torch.device("cuda", 0)
    with pytest.warns(UserWarning, match="cuda:1, but LOCAL_RANK=0"):
        assert streamtok._staging.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="cuda:5.*2 CUDA device"):
        streamtok._staging.resolve_device("cuda:5")
    fake.count = 1  # one GPU visible per process (CUDA_VISIBLE_DEVICES per rank): LOCAL_RANK is no index
    monkeypatch.setenv("LOCAL_RANK", "3")
    fake.set_device(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert streamtok._staging.resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setattr(fake, "is_available", lambda: False)
    assert streamtok._staging.resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        streamtok._staging.resolve_device("cuda")
