"""Tokens/s of the torchdata-nodes path against the StatefulDataLoader path, side by side.

Contestants, all over the same shards, shuffle mode, B x T tokens per batch:

- ``loader w=0`` / ``loader w=2``: ``streamtok.loader(...)`` with 0 or 2 worker processes;
- ``nodes``: ``nodes.Loader(BatchNode(WindowNode(...), B))`` in the training thread;
- ``nodes+Prefetcher``: the same behind ``nodes.Prefetcher(..., 2)`` (one thread);
- ``nodes threads=2``: ``WindowNode -> nodes.Batcher -> nodes.ParallelMapper(gather, 2 threads)``.

All iterators live in one process and take turns, ``rounds`` rounds of ``batches`` batches,
so a burst of load on a shared machine hits all alike; medians and ratios to ``loader w=0``
are printed. Usage::

    python benchmarks/bench_nodes.py [--tokens 64000000] [--rounds 9] [--batches 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from torchdata import nodes

import streamtok
from streamtok.bench.cli import machine, make_data
from streamtok.bench.run import warm
from streamtok.nodes import BatchNode, WindowNode


def contestants(data: Path, seq_len: int, batch_size: int) -> dict[str, Callable[[], Iterator]]:
    kw = dict(seq_len=seq_len, batch_size=batch_size, split="all", epochs=None, metrics=False)
    reader = streamtok.MemmapReader(data, advice="random")

    def windows() -> WindowNode:
        return WindowNode(reader, seq_len=seq_len, epochs=None)

    gather = streamtok.Collator(reader, seq_len=seq_len)
    return {
        "loader w=0": lambda: iter(streamtok.loader(data, num_workers=0, **kw)),
        "loader w=2": lambda: iter(streamtok.loader(data, num_workers=2, **kw)),
        "nodes": lambda: iter(nodes.Loader(BatchNode(windows(), batch_size))),
        "nodes+Prefetcher": lambda: iter(nodes.Loader(nodes.Prefetcher(BatchNode(windows(), batch_size), 2))),
        "nodes threads=2": lambda: iter(
            nodes.Loader(nodes.ParallelMapper(nodes.Batcher(windows(), batch_size), gather, num_workers=2, method="thread"))
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--tokens", type=int, default=64_000_000, help="tokens of generated data (without --data)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--out")
    args = p.parse_args()
    tmp = None if args.data else Path(tempfile.mkdtemp(prefix="streamtok-nodes-"))
    data = Path(args.data) if args.data else make_data(tmp, args.tokens)
    per_batch = args.batch_size * args.seq_len
    try:
        warm(sorted(str(f) for f in data.iterdir()))
        its = {name: make() for name, make in contestants(data, args.seq_len, args.batch_size).items()}
        for it in its.values():
            t_end = time.perf_counter() + args.warmup_s
            while time.perf_counter() < t_end:
                next(it)
        rates: dict[str, list[float]] = {n: [] for n in its}
        for _ in range(args.rounds):
            for name, it in its.items():
                t = time.perf_counter()
                for _ in range(args.batches):
                    next(it)
                rates[name].append(args.batches * per_batch / (time.perf_counter() - t))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    med = {n: statistics.median(r) for n, r in rates.items()}
    base = med["loader w=0"]
    print(f"B={args.batch_size} T={args.seq_len}, {args.rounds} rounds x {args.batches} batches, medians")
    print("| contestant | Mtok/s | x loader w=0 |")
    print("|---|---:|---:|")
    for n, m in med.items():
        print(f"| {n} | {m / 1e6:.0f} | {m / base:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rates": rates}, indent=1))


if __name__ == "__main__":
    main()
