"""Workers re-spawned every pass (non-persistent, a loop that breaks every 150 batches) are
attributed by their slot, and the CPU of reaped workers counts (issue 21, item 2).

Ground truth, from the same run: the batches the loop took, and the CPU time of this
process and of the children it reaped (``os.times()``). The monitor's window starts and
ends between passes, when no worker lives, so the truth covers the same processes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from streamtok_monitor.watcher import Sampler

import streamtok
from streamtok._formats import write_shard

PASSES, PER_PASS = 4, 150


@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    write_shard(tmp_path / "data" / "w_000.bin", np.random.default_rng(5).integers(0, 50257, 2_000_000, dtype=np.uint16))
    return str(tmp_path / "data")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def test_respawned_workers_count_by_slot_and_their_cpu_counts(source):
    loader = streamtok.loader(source, seq_len=256, batch_size=16, split="all", epochs=None, num_workers=2)
    sampler = Sampler(run_dir=loader._metrics.dir)
    for _ in range(1):  # a first pass: the slots are claimed
        it = iter(loader)
        for _ in range(20):
            next(it)
        it.close()
    del it
    sampler.sample()
    cpu0 = _cpu()
    taken, roles, snaps = 0, [], []
    for p in range(PASSES):
        it = iter(loader)
        for k in range(PER_PASS):
            next(it)
            taken += 1
            if p == 1 and k == PER_PASS // 2:  # mid-pass: who are these processes?
                snaps.append(sampler.sample())
                roles = [q["role"] for q in snaps[-1]["memory"]["processes"]]
        it.close()
        del it
    snaps.append(sampler.sample())
    cpu1 = _cpu()
    # Every process is named for what it is: the trainer and its two workers.
    assert roles and roles[0] == "trainer" and all(r.startswith("worker") for r in roles[1:]), roles
    # A worker of the previous pass may still be exiting (not yet reaped) when the sample is
    # taken: it is named so, never as one of this pass. The two of this pass hold the slots.
    assert sorted(r for r in roles if not r.endswith("(exiting)")) == ["trainer", "worker 0", "worker 1"], roles
    # Per-worker counts add up to what the loop took (plus the batches in flight at each break).
    counts = [sum(s["throughput"]["workers"][i]["batches_per_s"] * s["interval_s"] for s in snaps) for i in range(2)]
    assert taken <= sum(counts) <= taken + PASSES * 2 * 2 * 2 + 4, (counts, taken)
    for c in counts:  # round-robin: each worker gathers about half
        assert abs(c - taken / 2) <= 0.1 * taken, (counts, taken)
    # Σ CPU: the trainer's and the reaped workers' (10 ms ticks; a few for rounding).
    shown = sum(s["memory"]["cpu_total"] * s["interval_s"] for s in snaps)
    truth = cpu1 - cpu0
    assert abs(shown - truth) <= 0.15 * truth + 0.05, (shown, truth)
