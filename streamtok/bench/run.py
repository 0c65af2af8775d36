"""One contestant, measured in its own process: ``python -m streamtok.bench.run SPEC_JSON``.

Its own process, so that peak memory is its own and one contestant's workers or page-table
state do not leak into the next. Prints one JSON line. Measures, in this order:

1. cold (optional): evict the shards from the page cache (``POSIX_FADV_DONTNEED``), then
   take ``cold_batches + 1`` batches; tokens/s over all but the first (which includes
   starting workers), and read amplification: bytes the process tree read from disk
   (``/proc/PID/io`` ``read_bytes``) per byte of the windows delivered (``B x (T+1)`` tokens).
2. warm: the shards are read once into the page cache; ``repeats`` runs of ``batches``
   batches after ``warmup`` batches and at least ``warmup_s`` seconds; the median tokens/s.
3. trainer: a simulated training step (the thread sleeps ``step_ms``, as it would while the
   GPU computes) after each batch; the median time inside ``next()`` per batch and the
   fraction of the loop spent waiting for data.

Peak RSS of the process tree (anonymous, file-backed and shared-memory pages, from
``/proc/PID/status``) is sampled every 100 ms throughout.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from .contestants import Shape, make, shard_files

PAGE = 4096
_RSS_KEYS = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}


def evict(files: list[Path]) -> None:
    """Drop these files' pages from the page cache (no root needed; dirty pages stay)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            try:
                os.fdatasync(fd)  # dirty pages (freshly written data) cannot be dropped
            except OSError:
                pass
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(files: list[Path]) -> None:
    """Read these files once so their pages are cached."""
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(1 << 23):
                pass


def tree() -> list[psutil.Process]:
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def tree_read_bytes() -> int:
    total = 0
    for p in tree():
        try:
            total += p.io_counters().read_bytes
        except psutil.Error:
            pass
    return total


def rss(pid: int) -> dict[str, int]:
    out = dict.fromkeys(_RSS_KEYS.values(), 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = _RSS_KEYS.get(line.split(" ", 1)[0].split("\t", 1)[0])
                if key:
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


class PeakRSS(threading.Thread):
    """Samples the process tree's RSS (summed over processes) every ``interval_s``; keeps the peak."""

    def __init__(self, interval_s: float = 0.1):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak = {"anon": 0, "file": 0, "shmem": 0}
        self._stop_event = threading.Event()

    def sample(self) -> None:
        total = {"anon": 0, "file": 0, "shmem": 0}
        for p in tree():
            for k, v in rss(p.pid).items():
                total[k] += v
        for k, v in total.items():
            self.peak[k] = max(self.peak[k], v)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.sample()

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        self.sample()
        return self.peak


def page_floor(window_bytes: int, itemsize: int, sequential: bool = False) -> float:
    """Bytes of the whole pages a window spans per byte of it, averaged over start alignments.

    Windows read back to back (``sequential``) share their pages: the floor is then 1.
    """
    if sequential:
        return 1.0
    aligns = range(0, PAGE, itemsize)
    return sum(-(-(a + window_bytes) // PAGE) * PAGE for a in aligns) / len(aligns) / window_bytes


def _timed(it: Any, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return time.perf_counter() - t


def run(spec: dict[str, Any]) -> dict[str, Any]:
    data = Path(spec["data"])
    shape = Shape(spec["batch_size"], spec["seq_len"])
    tokens = shape.batch_size * shape.seq_len
    files = shard_files(data)
    factory = make(spec["name"], data, shape)
    result: dict[str, Any] = {"name": spec["name"]}
    sampler = PeakRSS()
    sampler.start()

    if spec.get("cold_batches"):
        evict(files)
        n = spec["cold_batches"]
        r0 = tree_read_bytes()
        it = factory()
        next(it)
        dt = _timed(it, n)
        read = tree_read_bytes() - r0
        del it
        itemsize = spec["itemsize"]
        window_bytes = (shape.seq_len + 1) * itemsize
        result["cold"] = {
            "batches": n,
            "tokens_per_s": n * tokens / dt,
            "read_bytes": read,
            "read_amp": read / ((n + 1) * shape.batch_size * window_bytes),
            "page_floor": page_floor(window_bytes, itemsize, "mode=sequential" in spec["name"]),
        }

    warm(files)
    rates = []
    it = factory()
    # Warm up by batches and by time: a fresh process maps the shards' cached pages into its
    # page tables as it touches them, and runs get ~2x faster over the first few thousand
    # batches of random windows over 1 GiB; the table is about the steady state.
    t_end = time.perf_counter() + spec.get("warmup_s", 0.0)
    _timed(it, spec["warmup"])
    while time.perf_counter() < t_end:
        _timed(it, 10)
    for _ in range(spec["repeats"]):
        rates.append(spec["batches"] * tokens / _timed(it, spec["batches"]))
    result["tokens_per_s"] = statistics.median(rates)
    result["tokens_per_s_all"] = rates

    step_s = spec["step_ms"] / 1000
    waits = []
    t_loop = time.perf_counter()
    for _ in range(spec["trainer_batches"]):
        t = time.perf_counter()
        next(it)
        waits.append(time.perf_counter() - t)
        time.sleep(step_s)
    loop = time.perf_counter() - t_loop
    del it
    result["trainer_us"] = statistics.median(waits) * 1e6
    result["wait_fraction"] = sum(waits) / loop
    result["peak_rss"] = sampler.stop()
    return result


def main() -> int:
    spec = json.loads(sys.argv[1])
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
