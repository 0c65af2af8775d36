import collections
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from _util import batch_hash, roundtrip, take

import streamtok
import streamtok._background
from streamtok import ConfigError, CUDAPrefetcher, PassActiveError


def make(path, **kw):
    return streamtok.loader(path, seq_len=32, batch_size=4, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_batches_as_the_loader(shard_dir, workers):
    path, _ = shard_dir
    ref = [batch_hash(*b) for b in make(path)]
    pf = CUDAPrefetcher(make(path, num_workers=workers), device="cpu", depth=3)
    got = [batch_hash(*b) for b in pf]
    assert got == ref and len(pf) == len(ref)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_state_is_as_of_the_last_consumed_batch(shard_dir, depth):
    path, _ = shard_dir
    plain = make(path)
    pf = CUDAPrefetcher(make(path), device="cpu", depth=depth)
    it = iter(pf)
    for _ in range(7):
        next(it)
    assert pf.in_flight == depth  # batches fetched ahead are not counted as consumed
    take(plain, 7)
    assert pf.state_dict() == plain.state_dict()
    ref = [batch_hash(*b) for b in make(path)]
    resumed = CUDAPrefetcher(make(path), device="cpu", depth=depth)
    resumed.load_state_dict(roundtrip(pf.state_dict()))
    assert [batch_hash(*b) for b in resumed] == ref[7:]


def test_state_before_any_batch_is_the_loaded_one(shard_dir):
    path, _ = shard_dir
    first = make(path)
    take(first, 3)
    state = roundtrip(first.state_dict())
    pf = CUDAPrefetcher(make(path), device="cpu")
    pf.load_state_dict(state)
    assert pf.state_dict() == state


def test_dtype_is_converted_at_the_end(shard_dir):
    x, y = next(iter(CUDAPrefetcher(make(shard_dir[0]), device="cpu", dtype=torch.int32)))
    assert x.dtype == y.dtype == torch.int32 and x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])


def test_generic_iterables_pass_through():
    data = [(torch.arange(3), {"m": torch.ones(2)}) for _ in range(4)]
    out = list(CUDAPrefetcher(data, device="cpu", depth=2))
    assert len(out) == 4 and torch.equal(out[0][0], torch.arange(3)) and torch.equal(out[2][1]["m"], torch.ones(2))


def test_bad_settings():
    with pytest.raises(ConfigError, match="depth"):
        CUDAPrefetcher([], depth=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            CUDAPrefetcher([], device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu(shard_dir):
    path, _ = shard_dir
    ref = [(x, y) for x, y in make(path)]
    got = list(CUDAPrefetcher(make(path, pin_memory=True), device="cuda", depth=2))
    assert got[0][0].is_cuda and got[0][0].dtype == torch.int64
    assert all(torch.equal(a.cpu(), c) and torch.equal(b.cpu(), d) for (a, b), (c, d) in zip(got, ref))


@pytest.mark.parametrize("depth", [1, 3])
def test_background_thread_stages_depth_batches_ahead(shard_dir, depth):
    path, _ = shard_dir
    ref = [batch_hash(*b) for b in make(path)]
    pf = CUDAPrefetcher(make(path, num_workers=2), device="cpu", depth=depth)
    assert pf.background
    it = iter(pf)
    first = next(it)
    deadline = time.monotonic() + 10
    while pf.in_flight < depth and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert pf.in_flight <= depth
    rest = [batch_hash(*b) for b in it]
    assert [batch_hash(*first)] + rest == ref


def test_depth_one_takes_exactly_one_batch_ahead_with_a_thread():
    asked = []

    def source():
        for k in range(100):
            asked.append(k)
            yield torch.full((2,), k)

    it = iter(CUDAPrefetcher(source(), device="cpu", depth=1, background=True))
    assert int(next(it)[0]) == 0
    deadline = time.monotonic() + 10
    while len(asked) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # room for a wrong third fetch to show
    assert asked == [0, 1]
    assert [int(b[0]) for b in it] == list(range(1, 100))


def test_namedtuple_batches_keep_their_type():
    Pair = collections.namedtuple("Pair", "x y")
    data = [Pair(torch.arange(3) + k, {"m": torch.ones(2)}) for k in range(4)]
    out = list(CUDAPrefetcher(data, device="cpu", depth=2))
    assert [type(b) for b in out] == [Pair] * 4 and torch.equal(out[3].x, torch.arange(3) + 3)


def test_a_thread_left_behind_cannot_move_the_position(shard_dir, monkeypatch):
    """A thread blocked in its source past the join timeout: after load_state_dict and during
    the next pass it can no longer advance the loader (its pass token is stale)."""
    monkeypatch.setattr(streamtok._background, "_JOIN_S", 0.2)
    path, _ = shard_dir
    plain, reference, states = make(path), [], []
    for batch in plain:
        reference.append(batch_hash(*batch))
        states.append(plain.state_dict())
    loader = make(path)
    pf = CUDAPrefetcher(loader, device="cpu", depth=1, background=True)
    it = iter(pf)
    head = [batch_hash(*next(it)) for _ in range(3)]
    state = pf.state_dict()
    entered, go, real = threading.Event(), threading.Event(), loader.collator.reader.gather

    def stuck(*args, **kw):  # the thread's next read blocks (a hung worker, a dead disk)
        if not entered.is_set():
            entered.set()
            go.wait(10)
        return real(*args, **kw)

    deadline = time.monotonic() + 10
    while pf.in_flight < 1 and time.monotonic() < deadline:  # the 4th batch is staged
        time.sleep(0.01)
    monkeypatch.setattr(loader.collator.reader, "gather", stuck)
    next(it)  # frees a place: the thread starts on the 5th batch and blocks
    assert entered.wait(10)
    old = pf._thread()._thread
    with pytest.raises(PassActiveError, match="still running"):  # as the loader says
        pf.load_state_dict(state)
    with pytest.warns(RuntimeWarning, match="did not stop"):
        it.close()  # the loop is left: its thread is stopped, or left behind after the timeout
        pf.load_state_dict(state)
    assert old.is_alive()
    new = iter(pf)
    tail = [batch_hash(*next(new))]  # the new pass owns the position now
    go.set()
    old.join(10)
    assert not old.is_alive()
    got_states = [pf.state_dict()]
    for batch in new:
        tail.append(batch_hash(*batch))
        got_states.append(pf.state_dict())
    assert head + tail == reference
    assert got_states == states[3:]  # the old thread added no step to the position


def test_gpu_smoke_skips_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is here: benchmarks/gpu_smoke.py runs for real")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu_smoke.py")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("SKIP"), done.stdout + done.stderr


@pytest.mark.filterwarnings("ignore:the prefetch thread did not stop")
def test_close_from_another_thread_ends_a_waiting_consumer(monkeypatch):
    monkeypatch.setattr(streamtok._background, "_JOIN_S", 0.1)
    gate = threading.Event()

    def slow():
        yield 0
        gate.wait(10)  # the source has nothing more for now
        yield 1

    it = streamtok._background.Background(slow(), lambda v: v, ahead=1)
    assert next(it) == 0
    closer = threading.Timer(0.1, it.close)
    closer.start()
    with pytest.raises(StopIteration):
        next(it)  # would wait for ever without the wake-up
    closer.join(5)
    gate.set()


@pytest.mark.parametrize("background", [False, True])
def test_load_state_dict_during_a_pass_is_refused_as_by_the_loader(shard_dir, background):
    """The loader's rule: the running loop is not ended silently, the load is refused until it ends."""
    path, _ = shard_dir
    ref = [batch_hash(*b) for b in make(path)]
    pf = CUDAPrefetcher(make(path), device="cpu", depth=2, background=background)
    it = iter(pf)
    head = [batch_hash(*next(it)) for _ in range(3)]
    state = pf.state_dict()
    with pytest.raises(PassActiveError, match="still running"):
        pf.load_state_dict(roundtrip(state))
    assert batch_hash(*next(it)) == ref[3]  # the loop goes on where it was
    assert pf.state_dict() != state
    it.close()
    pf.load_state_dict(roundtrip(state))
    assert head + [batch_hash(*b) for b in pf] == ref
