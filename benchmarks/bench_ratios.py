"""The single-process targets, measured interleaved so that noisy neighbours hit all alike.

``streamtok bench`` runs each contestant in its own process, one after another; on a shared
machine a burst of someone else's load lands on one contestant and not the next. Here the
``num_workers=0`` contestants live in one process and take turns: ``rounds`` rounds of
``batches`` batches each, round-robin; the median per contestant and the ratios follow.
Usage::

    python benchmarks/bench_ratios.py [--data DIR] [--rounds 15] [--batches 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from streamtok.bench.cli import machine, make_data
from streamtok.bench.contestants import Shape, make, shard_files
from streamtok.bench.run import warm

NAMES = (
    "nanogpt", "floor",
    "streamtok:mode=shuffle,workers=0", "streamtok:mode=shuffle,workers=0,out=compact",
    "streamtok:mode=random,workers=0", "streamtok:mode=random,workers=0,out=compact",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--warmup-s", type=float, default=3.0, help="warm-up time per contestant")
    p.add_argument("--out")
    args = p.parse_args()
    tmp = None if args.data else Path(tempfile.mkdtemp(prefix="streamtok-ratios-"))
    data = Path(args.data) if args.data else make_data(tmp, 256_000_000)
    shape = Shape(args.batch_size, args.seq_len)
    try:
        warm(shard_files(data))
        its = {n: make(n, data, shape)() for n in NAMES}
        for it in its.values():  # steady state: the process has mapped the cached pages
            t_end = time.perf_counter() + args.warmup_s
            while time.perf_counter() < t_end:
                next(it)
        rates: dict[str, list[float]] = {n: [] for n in NAMES}
        for _ in range(args.rounds):
            for n, it in its.items():
                batches = max(10, args.batches // 10) if n == "nanogpt" else args.batches
                t = time.perf_counter()
                for _ in range(batches):
                    next(it)
                rates[n].append(batches * shape.batch_size * shape.seq_len / (time.perf_counter() - t))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    med = {n: statistics.median(r) for n, r in rates.items()}
    print("| contestant (num_workers=0) | Mtok/s (median) | x nanoGPT | / floor |")
    print("|---|---:|---:|---:|")
    for n in NAMES:
        print(f"| {n} | {med[n] / 1e6:.0f} | {med[n] / med['nanogpt']:.1f} | {med[n] / med['floor']:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rates": rates}, indent=1))


if __name__ == "__main__":
    main()
