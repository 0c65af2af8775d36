"""The monitor's "waiting" against the training loop's own measurement (issue 21, item 1).

The ground truth is the loop's ``perf_counter`` around every ``next()``, measured in the same run as the
monitor's figure: two :class:`Sampler` snapshots, the first after the previous pass ended
and the second after this one was closed, so both read the Meter's final totals and the
same span of time. The truth's denominator is the span between the two snapshots, as the
monitor's is. Nothing is compared with a fixed speed: on a loaded 2-core machine the loop
may be preempted anywhere, and the bound (3 points) is about the estimator, not the
machine. Loops: one that only takes batches, one that spins 300 µs per batch, one that
sleeps 5 ms; at 0 and 2 (persistent) workers, with and without a prefetcher, with the
shards in the page cache and evicted before each pass.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from streamtok_monitor.watcher import Sampler

import streamtok
from streamtok._formats import write_shard

LOOPS = {"fast": (0.0, 0.35), "300us": (300e-6, 0.35), "5ms": (5e-3, 0.35)}  # work per batch, seconds of loop


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("wait")
    rng = np.random.default_rng(3)
    paths = []
    for k in range(2):
        p = root / f"wait_{k:03d}.bin"
        write_shard(p, rng.integers(0, 50257, 3_000_000, dtype=np.uint16))
        paths.append(str(p))
    return root, paths


def _evict(paths: list[str]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _one_pass(source, work_s: float, span_s: float) -> tuple[float, int]:
    """Iterate one pass for ``span_s`` seconds, doing ``work_s`` per batch; the seconds
    spent inside ``next()`` (the loop's own measurement), and the batches taken."""
    clock = time.perf_counter
    it = iter(source)
    inside, n = 0.0, 0
    end = clock() + span_s
    while True:
        t = clock()
        next(it)
        now = clock()
        inside += now - t
        n += 1
        if now >= end:
            break
        if work_s >= 1e-3:
            time.sleep(work_s)
        elif work_s:
            _spin(work_s)
    it.close()  # the pass ends here (a break): the meter publishes its final totals
    return inside, n


@pytest.mark.parametrize("cache", ["warm", "cold"])
@pytest.mark.parametrize("prefetch", [False, True], ids=["loader", "prefetcher"])
@pytest.mark.parametrize("workers", [0, 2])
def test_waiting_matches_the_loops_own_measurement(shards, workers, prefetch, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    root, paths = shards
    loader = streamtok.loader(
        str(root), seq_len=256, batch_size=16, split="all", epochs=None, num_workers=workers,
        persistent_workers=workers > 0,
    )
    source = streamtok.CUDAPrefetcher(loader, device="cpu", depth=2) if prefetch else loader
    _one_pass(source, 0.0, 0.05)  # workers started, maps opened
    sampler = Sampler(run_dir=loader._metrics.dir)
    rows = []
    for name, (work_s, span_s) in LOOPS.items():
        if cache == "cold":
            _evict(paths)
        before = sampler.sample()
        inside, n = _one_pass(source, work_s, span_s)
        snap = sampler.sample()
        span = snap["time"] - before["time"]
        truth = inside / span
        shown = snap["throughput"]["wait_fraction"]
        rows.append((name, n, round(100 * truth, 1), round(100 * shown, 1)))
    del source, loader
    for name, n, truth, shown in rows:
        assert abs(truth - shown) <= 3.0, f"{name} loop ({n} batches): the loop waited {truth}%, the monitor shows {shown}%: {rows}"
