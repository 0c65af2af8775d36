"""The training loop's "waiting": cost per batch and accuracy of candidate estimators (issue 21).

    python benchmarks/bench_wait.py [--batches 300000] [--repeats 7] [--trace-batches 200000]

Three estimators of the time a loop spends inside ``next()``:

* ``sampled wait`` (streamtok before issue 21): time one batch in ``stride`` (1-64), count
  it ``stride`` times, capped at the block's wall time.
* ``every batch``: two clock reads per batch, exact.
* ``wall - sampled work`` (:class:`streamtok.metrics.meter.Meter` now): the wall time between
  timed receipts is exact, the loop's own work is sampled; every batch timed when batches
  take 50 µs or more.

Cost: each wraps ``range(n)`` and is iterated by an empty loop, the bare generator's time
subtracted; the estimators alternate within each repeat (drift hits all alike) and the
median over repeats is reported, in ns per batch. Accuracy: each is replayed over
synthetic traces on a simulated clock (the real Meter code, its clock replaced): per batch a
wait and a work drawn from the distributions below, with heavy tails (1 batch in 500 stalls
2-20 ms: preemption, a cold page, a late worker). Reported: truth and estimate, in % of the
wall time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import timeit
from types import SimpleNamespace

from streamtok import _meter, metrics


class _Position:
    batch_size, seq_len, epoch, offset = 32, 1024, 0, 0


def sampled_wait(it, clock=time.perf_counter_ns, out=None):
    """The estimator before issue 21 (its arithmetic, without the slot)."""
    stride, timed_at, n, wait = 1, 0, 0, 0
    t0 = last = clock()
    for buf in it:
        if t0:
            t1 = clock()
            wait += min((t1 - t0) * stride, t1 - last)
            if t1 - last < 1_000_000 and stride < 64:
                stride *= 2
            elif t1 - last > 4_000_000 and stride > 1:
                stride //= 2
            last, t0 = t1, 0
        n += 1
        yield buf
        if n - timed_at >= stride:
            timed_at, t0 = n, clock()
    if t0:
        wait += clock() - t0
    if out is not None:
        out.append(wait)


def every_batch(it, clock=time.perf_counter_ns, out=None):
    """Two clock reads per batch: exact."""
    wait = 0
    t0 = clock()
    for buf in it:
        t1 = clock()
        wait += t1 - t0
        yield buf
        t0 = clock()
    wait += clock() - t0
    if out is not None:
        out.append(wait)


def _meter_gen(root: str):
    pub = metrics.RunPublisher({}, n_slots=1, root=root)
    slot = pub.slot(0, metrics.ROLE_TRAINER)

    def meter(it, clock=None, out=None):
        if clock is None and out is None:  # the cost run: the Meter alone, no extra generator
            return iter(_meter.Meter(it, slot, _Position))
        return replayed(it, clock, out)

    def replayed(it, clock, out):
        if clock is not None:
            _meter.time = SimpleNamespace(perf_counter_ns=clock)
        try:
            w0 = slot.wait_ns
            yield from _meter.Meter(it, slot, _Position)
            if out is not None:
                out.append(slot.wait_ns - w0)
        finally:
            _meter.time = time

    return meter


def cost(root: str, n: int, repeats: int) -> dict[str, float]:
    meter = _meter_gen(root)

    def bare(it):
        yield from it

    contestants = {"bare": bare, "sampled wait": sampled_wait, "every batch": every_batch, "wall - sampled work": meter}
    times: dict[str, list[float]] = {k: [] for k in contestants}
    for _ in range(repeats):
        for name, gen in contestants.items():
            def run(gen=gen):
                for _ in gen(iter(range(n))):
                    pass
            times[name].append(min(timeit.repeat(run, number=1, repeat=2)) / n * 1e9)
    base = statistics.median(times["bare"])
    return {k: statistics.median(v) - base for k, v in times.items() if k != "bare"}


def _stalled(rng: random.Random, ns: int) -> int:
    """``ns`` of running, preempted for 2-20 ms at a rate of once per 20 ms of it."""
    return ns + (rng.randint(2_000_000, 20_000_000) if rng.random() < ns / 20_000_000 else 0)


def replay(root: str, batches: int, work_ns: int, wait_ns: int, seed: int, log_every: int = 0) -> dict[str, float]:
    """Truth and each estimator's wait share (%) over one synthetic heavy-tailed trace.

    Preemption hits the wait and the work alike, by their length; 1 batch in 500 also
    waits 2-20 ms more (a cold page, a late worker); with ``log_every``, every so many steps
    the loop's own step takes 5 ms more (a log line, a metric sync: a stall of the loop).
    """
    rng = random.Random(seed)
    trace = []
    for i in range(batches):
        wait = _stalled(rng, int(rng.expovariate(1 / wait_ns)) if wait_ns else 0)
        work = _stalled(rng, int(work_ns * rng.uniform(0.8, 1.2)))
        if rng.random() < 1 / 500:
            wait += rng.randint(2_000_000, 20_000_000)
        if log_every and i % log_every == log_every - 1:
            work += 5_000_000
        trace.append((wait, work))
    meter = _meter_gen(root)
    out = {"truth": 100 * sum(w for w, _ in trace) / sum(w + k for w, k in trace)}
    for name, gen in (("sampled wait", sampled_wait), ("every batch", every_batch), ("wall - sampled work", meter)):
        now = [0]

        def clock():
            now[0] += 60  # a clock read takes time too
            return now[0]

        def source():
            for wait, _ in trace:
                now[0] += wait
                yield None

        got: list[int] = []
        t0 = clock()
        for i, _ in enumerate(gen(source(), clock=clock, out=got)):
            now[0] += trace[i][1]
        total = now[0] - t0
        out[name] = 100 * got[0] / total if got else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=300_000, help="batches per cost run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--trace-batches", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        print("cost per batch over an empty loop (ns, median of repeats):")
        for name, ns in cost(root, args.batches, args.repeats).items():
            print(f"  {name:<22} {ns:6.0f}")
        print("replay over heavy-tailed traces (% of wall time inside next()):")
        print(f"  {'loop':<28} {'truth':>6} {'sampled wait':>13} {'every batch':>12} {'wall - sampled work':>20}")
        for label, work, wait, log in (
            ("fast (2 µs work, 30 µs wait)", 2_000, 30_000, 0), ("20 µs work, 5 µs wait", 20_000, 5_000, 0),
            ("300 µs work, 100 µs wait", 300_000, 100_000, 0), ("5 ms work, 200 µs wait", 5_000_000, 200_000, 0),
            ("fast, 5 ms log / 1000 steps", 2_000, 30_000, 1000), ("20 µs, 5 ms log / 1000", 20_000, 5_000, 1000),
        ):
            batches = args.trace_batches if work < 100_000 else args.trace_batches // 50
            r = replay(root, batches, work, wait, seed=1, log_every=log)
            print(f"  {label:<28} {r['truth']:6.1f} {r['sampled wait']:13.1f} {r['every batch']:12.1f} {r['wall - sampled work']:20.1f}")


if __name__ == "__main__":
    main()
