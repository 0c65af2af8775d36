"""What the per-batch safety checks cost, measured interleaved in one process.

Issue 9 added checks to the hot path: the reader's size check on every shard a batch touches
(one ``fstat``, so a shard truncated under a running loader is an error, not a SIGBUS), and
the pass token under a lock before each position advance. This runs the ``num_workers=0``
loader over the same warm shards with the checks as shipped and with them replaced by no-ops,
in alternating rounds, with a second, identical shipped loader as a control (its ratio to
the first is the noise floor of the run), and prints the medians and the ratios. Usage::

    python benchmarks/bench_checks.py [--tokens 64000000] [--rounds 15] [--batches 300]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import streamtok
from streamtok._bench_run import warm
from streamtok.bench import make_data


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64_000_000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="streamtok-checks-"))
    try:
        data = make_data(tmp, args.tokens)
        warm(sorted(tmp.iterdir()))
        kw = dict(seq_len=args.seq_len, batch_size=args.batch_size, split="all", epochs=None, metrics=False)
        shipped = streamtok.loader(data, **kw)
        control = streamtok.loader(data, **kw)
        bare = streamtok.loader(data, **kw)
        reader = bare.collator.reader
        reader.checked_array = reader.shard_array  # type: ignore[method-assign]
        bare._position_lock = _NoLock()  # type: ignore[assignment]
        its = {"checks on": iter(shipped), "checks off": iter(bare), "control (on)": iter(control)}
        for it in its.values():
            for _ in range(200):
                next(it)
        per_batch: dict[str, list[float]] = {n: [] for n in its}
        names = list(its)
        for r in range(args.rounds):
            for name in names[r % 3 :] + names[: r % 3]:  # rotate: no contestant always runs first
                it = its[name]
                t = time.perf_counter()
                for _ in range(args.batches):
                    next(it)
                per_batch[name].append((time.perf_counter() - t) / args.batches * 1e6)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    on, off, ctl = (statistics.median(per_batch[n]) for n in ("checks on", "checks off", "control (on)"))
    print(f"B={args.batch_size} T={args.seq_len}, shuffle, num_workers=0, {args.rounds} rounds x {args.batches} batches")
    print(f"per batch, median: checks on {on:.1f} µs, off {off:.1f} µs, control {ctl:.1f} µs")
    print(f"on/off {on / off:.3f} ({on - off:+.1f} µs); control/on {ctl / on:.3f} (the noise of this run)")


if __name__ == "__main__":
    main()
