"""The monitor behind ``CUDAPrefetcher(background=True)``: it shows the training loop's wait
and rate (the consumer slot), not those of the thread that iterates the loader.

The trainer is this test process; :class:`Sampler` reads its run directory as the dashboard
does. Bounds are loose: the loop either sleeps 4 ms per batch (it should hardly wait) or
takes batches as fast as a source that gathers each in 4 ms gives them (it mostly waits).
"""

import time

import numpy as np
import pytest
import torch
from streamtok_monitor.panels import throughput_detail
from streamtok_monitor.watcher import Sampler

import streamtok
from streamtok._formats import write_shard
from streamtok.metrics import publish as metrics

WARMUP, TAKEN, STEP_S = 10, 50, 0.004


@pytest.fixture(autouse=True)
def run_root(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "data" / "one_000.bin"
    write_shard(path, np.random.default_rng(1).integers(0, 50257, 40_000, dtype=np.uint16))
    return path


def _slow_gathers(worker_id):
    """``worker_init_fn``: every batch takes 4 ms more to gather (a slow disk, say)."""
    collator = torch.utils.data.get_worker_info().dataset.collator
    gather = collator.gather

    def slow(*args, **kw):
        time.sleep(STEP_S)
        return gather(*args, **kw)

    collator.gather = slow


def _prefetcher(shard, **kw):
    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all", epochs=None, **kw)
    return streamtok.CUDAPrefetcher(loader, device="cpu", background=True)


def _take(it, n, step_s=0.0):
    for _ in range(n):
        next(it)
        if step_s:
            time.sleep(step_s)


def test_slow_loop_shows_little_wait_and_the_batches_it_took(shard):
    pf = _prefetcher(shard, num_workers=2)
    sampler = Sampler(run_dir=pf.source._metrics.dir)
    it = iter(pf)
    _take(it, WARMUP, STEP_S)  # workers started: their start-up is not in the interval measured
    sampler.sample()
    _take(it, TAKEN, STEP_S)
    it.close()  # stores the final totals
    snap = sampler.sample()
    tp = snap["throughput"]
    assert tp["wait_source"] == "loop" and tp["wait_fraction"] < 0.25
    assert 0 <= tp["prefetch_thread_wait_fraction"] <= 1
    # Totals and rates count what the loop took, not what the thread took ahead of it.
    assert (tp["batches"], tp["tokens"]) == (WARMUP + TAKEN, (WARMUP + TAKEN) * 4 * 100)
    assert metrics.StatsReader(pf.source._metrics.dir).slot(0)["batches"] >= WARMUP + TAKEN + pf.depth
    taken = tp["tokens_per_s"] * snap["interval_s"] / (4 * 100)
    # Totals are stored every 5 ms, so the first sample may have missed the last two batches.
    assert TAKEN - 0.5 < taken < TAKEN + 2.5
    assert abs(tp["batches_per_s"] * snap["interval_s"] - taken) < 1e-6
    step_samples = metrics.read_manifest(pf.source._metrics.dir)["step_samples"]
    assert snap["run"]["step"] == pf.state_dict()["sampler"]["offset"] // step_samples
    assert "waiting" in throughput_detail(snap).plain and "thread wait" not in throughput_detail(snap).plain


def test_fast_loop_on_a_slow_source_shows_a_large_wait(shard):
    pf = _prefetcher(shard, num_workers=1, worker_init_fn=_slow_gathers)
    sampler = Sampler(run_dir=pf.source._metrics.dir)
    it = iter(pf)
    try:
        _take(it, WARMUP)
        sampler.sample()
        _take(it, TAKEN)  # the loop does nothing: nearly all its time is inside next()
        snap = sampler.sample()
    finally:
        it.close()
    tp = snap["throughput"]
    assert tp["wait_source"] == "loop" and tp["wait_fraction"] > 0.5
    assert 0 < tp["tokens_per_s"] <= 4 * 100 / STEP_S * 1.1  # no faster than one batch per 4 ms


def test_run_without_a_consumer_slot_is_labelled_thread_wait(shard, monkeypatch):
    monkeypatch.setattr(metrics.RunPublisher, "consumer", lambda self, state: None)  # as older streamtok
    pf = _prefetcher(shard, num_workers=1)
    sampler = Sampler(run_dir=pf.source._metrics.dir)
    it = iter(pf)
    _take(it, WARMUP)
    it.close()
    sampler.manifest = metrics.read_manifest(pf.source._metrics.dir)  # the prefetcher wrote it after
    snap = sampler.sample()
    tp = snap["throughput"]
    assert tp["wait_source"] == "prefetch_thread" and tp["prefetch_thread_wait_fraction"] is None
    assert tp["batches"] >= WARMUP and "thread wait" in throughput_detail(snap).plain
