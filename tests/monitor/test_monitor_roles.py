"""Each process of a run's tree is named for what it is: a worker of an ended pass that is
still exiting is "exiting", never "starting" (issue 21, item 2)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import streamtok
from streamtok import metrics
from streamtok._formats import write_shard
from streamtok_monitor import probes
from streamtok_monitor.roles import process_roles
from streamtok_monitor.watcher import Sampler

T, W0, W1, OLD, NEW = 100, 201, 202, 150, 301


def _roles(claimed, claimed_at, seen=None, started=None, num_workers=2, pids=(T, W0, W1, OLD, NEW)):
    return process_roles(T, pids, claimed=claimed, claimed_at=claimed_at, seen=seen or {},
                         started=started or {}, num_workers=num_workers)


def test_roles_from_slots_history_and_start_times():
    started = {T: 0.0, OLD: 10.0, W0: 20.0, W1: 20.0, NEW: 20.0}
    # The new pass's two workers hold both slots, claimed after OLD started: OLD is exiting.
    roles = _roles({W0: 0, W1: 1}, {0: 20.5, 1: 20.6}, started=started)
    assert roles == {T: "trainer", W0: "worker 0", W1: "worker 1", OLD: "worker (exiting)", NEW: "worker (exiting)"}
    # Seen holding slot 1 earlier, its slot now W1's: exiting, and which worker it was is known.
    assert _roles({W0: 0, W1: 1}, {0: 20.5, 1: 20.6}, seen={OLD: 1}, started=started)[OLD] == "worker 1 (exiting)"
    # Slot 1 still holds its old claim (before NEW started): NEW may be worker 1 of this pass.
    roles = _roles({W0: 0}, {0: 20.5, 1: 12.0}, started=started, pids=(T, W0, NEW))
    assert roles[NEW] == "worker (starting)"
    # A slot never claimed: a child without a slot is a worker that has not gathered yet.
    assert _roles({W0: 0}, {0: 20.5, 1: None}, started=started, pids=(T, W0, OLD))[OLD] == "worker (starting)"
    # Its start unknown, or claimed within a clock tick of it: not called exiting.
    assert _roles({W0: 0, W1: 1}, {0: 20.5, 1: 20.6}, started={}, pids=(T, OLD))[OLD] == "worker (starting)"
    assert _roles({W0: 0, W1: 1}, {0: 10.005, 1: 20.6}, started=started, pids=(T, OLD))[OLD] == "worker (starting)"
    # A run without workers: children are children.
    assert _roles({}, {}, started=started, num_workers=0, pids=(T, OLD)) == {T: "trainer", OLD: "child"}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)
    write_shard(tmp_path / "data" / "r_000.bin", np.random.default_rng(1).integers(0, 50257, 20_000, dtype=np.uint16))
    loader = streamtok.loader(str(tmp_path / "data"), seq_len=64, batch_size=4, split="all", num_workers=2)
    yield loader._metrics.dir  # this process is the run's trainer; no worker is started
    del loader  # kept alive until here: its run directory goes with it


def _slot(index: int, pid: int, worker_id: int, claimed_s: float) -> dict[str, int]:
    slot = dict.fromkeys(metrics.SLOT_FIELDS, 0)
    slot.update(slot=index, pid=pid, role=metrics.ROLE_WORKER, worker_id=worker_id, start_ns=int(claimed_s * 1e9))
    return slot


def test_a_worker_whose_slot_a_new_worker_took_is_named_exiting(run_dir, monkeypatch):
    """Real processes (children of this one) and the worker slots as a re-spawning loader
    leaves them: the old worker of slot 0 still alive after the new one claimed it."""
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    time.sleep(0.2)  # 20 clock ticks: the new pass's processes start later
    new0 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    new1 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tree = [old.pid, new0.pid, new1.pid]
        sampler = Sampler(run_dir=run_dir)
        monkeypatch.setattr(probes, "process_tree", lambda pid: [pid, *tree])
        slots = [_slot(1, old.pid, 0, time.time())]
        monkeypatch.setattr(sampler.stats, "slots", lambda: slots)
        roles = {p["pid"]: p["role"] for p in sampler.sample()["memory"]["processes"]}
        assert roles[old.pid] == "worker 0"
        assert roles[new0.pid] == roles[new1.pid] == "worker (starting)"  # slot 1 never claimed
        slots = [_slot(1, new0.pid, 0, time.time())]  # the new worker 0 claims the slot
        roles = {p["pid"]: p["role"] for p in sampler.sample()["memory"]["processes"]}
        assert roles[old.pid] == "worker 0 (exiting)"
        assert roles[new0.pid] == "worker 0" and roles[new1.pid] == "worker (starting)"
        # A fresh monitor never saw it hold a slot: both slots claimed after it started tell.
        sampler = Sampler(run_dir=run_dir)
        monkeypatch.setattr(sampler.stats, "slots", lambda: [_slot(1, new0.pid, 0, time.time()), _slot(2, new1.pid, 1, time.time())])
        roles = {p["pid"]: p["role"] for p in sampler.sample()["memory"]["processes"]}
        assert roles == {sampler.pid: "trainer", old.pid: "worker (exiting)", new0.pid: "worker 0", new1.pid: "worker 1"}
    finally:
        for p in (old, new0, new1):
            p.kill()
            p.wait()
