"""Cost of live metrics: loader throughput with metrics on vs off, side by side.

    python benchmarks/bench_metrics.py [--workers 0 2] [--batches 200] [--repeats 100]
                                       [--fresh-repeats 8] [--fresh-batches 3000] [--no-control]

Builds ~200 MB of uint16 shards in a temporary directory and reads them once (warm page
cache); loaders are B=32, T=1024, shuffle, endless. At ``num_workers=0``, two loaders (metrics
on, off) live side by side and alternating blocks of batches are timed, so drift of the
machine hits both alike; an off/off control row shows the noise floor. With workers, each
run is a fresh process (idle workers of a second loader would compete for the cores),
on and off alternating. Reported: median tokens per second of wall time and of CPU time
(this process at ``num_workers=0``; trainer plus workers otherwise, steadier when other jobs
share the machine), and the ratio on/off. Also times the two hot-path pieces alone: the
trainer's meter per batch and a worker's batch count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

import numpy as np

import streamtok
from streamtok.metrics import publish as metrics
from streamtok._formats import write_shard


def _loader_iter(source: str, *, on: bool, workers: int):
    loader = streamtok.loader(
        source, seq_len=1024, batch_size=32, split="all", num_workers=workers, epochs=None, metrics=on
    )
    it = iter(loader)
    for _ in range(100):  # warm-up: workers started, maps open
        next(it)
    return loader, it


def _block(it, batches: int) -> tuple[float, float]:
    """Tokens per second of wall time, and per second of this process's CPU time."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    tokens = batches * 32 * 1024
    return tokens / (time.perf_counter() - t0), tokens / (time.process_time() - c0)


_ONE_RUN = """
import os, sys, time, psutil, streamtok
source, workers, on, batches = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
loader = streamtok.loader(source, seq_len=1024, batch_size=32, split="all", num_workers=workers, epochs=None, metrics=on)
it = iter(loader)
for _ in range(200):
    next(it)
me = psutil.Process()
def cpu():
    return sum(sum(p.cpu_times()[:2]) for p in [me] + me.children(recursive=True))
t, c = time.perf_counter(), cpu()
for _ in range(batches):
    next(it)
tokens = batches * 32 * 1024
print(tokens / (time.perf_counter() - t), tokens / (cpu() - c))
"""


def _fresh_runs(source: str, workers: int, repeats: int, batches: int) -> tuple[list, list]:
    """With workers: each run in a fresh process (no idle loader's workers competing),
    on and off alternating; tokens per wall second and per CPU second of trainer + workers."""
    on, off = [], []
    for r in range(repeats):
        for flag in ((True, False) if r % 2 else (False, True)):
            out = subprocess.run(
                [sys.executable, "-c", _ONE_RUN, source, str(workers), "1" if flag else "0", str(batches)],
                capture_output=True, text=True, check=True, timeout=600,
            ).stdout.split()
            (on if flag else off).append(tuple(float(x) for x in out))
    return on, off


def _micro(root: str) -> tuple[float, float]:
    """Per-batch cost of the trainer's meter and of a worker's count, alone (µs)."""
    pub = metrics.RunPublisher({}, n_slots=2, root=root)
    n = 500_000

    class Position:
        batch_size, seq_len, epoch, offset = 32, 1024, 0, 0

    def bare() -> None:
        for _ in range(n):
            pass

    def metered() -> None:
        for _ in metrics.Meter(iter(range(n)), pub.slot(0, metrics.ROLE_TRAINER), Position):
            pass

    t_bare, t_meter = (min(timeit.repeat(f, number=1, repeat=3)) for f in (bare, metered))
    count = metrics.counting_gather(lambda s, shared=False: None, pub.slot(1, metrics.ROLE_WORKER), tokens=32 * 1025)
    starts = np.zeros(32, dtype=np.int64)
    t_count = min(timeit.repeat(lambda: count(starts, shared=True), number=n, repeat=3))
    t_call = min(timeit.repeat(lambda: None, number=n, repeat=3))
    return (t_meter - t_bare) / n * 1e6, (t_count - t_call) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--fresh-repeats", type=int, default=8, help="with workers: on/off process pairs")
    ap.add_argument("--fresh-batches", type=int, default=3000, help="with workers: batches timed per process")
    ap.add_argument("--control", action=argparse.BooleanOptionalAction, default=True, help="add an off/off row at num_workers=0 (the noise floor)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STREAMTOK_RUN_DIR"] = os.path.join(tmp, "runs")
        rng = np.random.default_rng(0)
        for k in range(2):
            write_shard(os.path.join(tmp, "data", f"bench_{k:03d}.bin"), rng.integers(0, 50257, 50_000_000, dtype=np.uint16))
        source = os.path.join(tmp, "data")
        for k in range(2):  # warm the page cache
            with open(os.path.join(source, f"bench_{k:03d}.bin"), "rb") as f:
                while f.read(1 << 24):
                    pass
        meter_us, count_us = _micro(os.path.join(tmp, "runs"))
        print(f"hot path alone: trainer meter {meter_us:.2f} µs/batch, worker batch count {count_us:.2f} µs/batch")
        print(f"{'workers':>7} {'clock':>5} {'off tok/s':>12} {'on tok/s':>12} {'on/off':>7}")
        runs = [(w, True) for w in args.workers] + ([(w, False) for w in args.workers] if args.control else [])
        for workers, metrics_on in runs:
            if workers == 0:
                # Two loaders live side by side; blocks of batches alternate so drift hits both.
                (_, it_a), (_, it_b) = _loader_iter(source, on=metrics_on, workers=0), _loader_iter(source, on=False, workers=0)
                on, off = [], []
                for r in range(args.repeats):
                    for flag in ((True, False) if r % 2 else (False, True)):
                        (on if flag else off).append(_block(it_a if flag else it_b, args.batches))
                del it_a, it_b
                how = f"{args.repeats} alternating blocks of {args.batches} batches each side"
            else:
                if not metrics_on:
                    continue  # fresh processes: no shared-machine asymmetry to control for
                on, off = _fresh_runs(source, workers, args.fresh_repeats, args.fresh_batches)
                how = f"{args.fresh_repeats} alternating fresh processes of {args.fresh_batches} batches each side; cpu = trainer + workers"
            for k, clock in enumerate(("wall", "cpu")):
                a, b = [x[k] for x in on], [x[k] for x in off]
                ratios = sorted(x / y for x, y in zip(a, b))
                m_on, m_off = statistics.median(a), statistics.median(b)
                label = f"{workers}" if metrics_on else f"{workers} (off/off control)"
                print(f"{label:>7} {clock:>5} {m_off / 1e6:>10.1f}M {m_on / 1e6:>10.1f}M {m_on / m_off:>7.3f}   "
                      f"(pairwise: median {statistics.median(ratios):.3f}, quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f}; {how})")


if __name__ == "__main__":
    main()
