"""Scaling: streamtok tokens/s vs ``num_workers`` (0, 1, 2) and batch size (8, 32, 128).

Each cell is one ``streamtok bench`` contestant run in its own process (warm cache, median
of repeats), next to nanoGPT's ``get_batch`` at the same batch size. Usage::

    python benchmarks/bench_scaling.py [--data DIR] [--out scaling.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from streamtok.bench.cli import machine, make_data, run_all

WORKERS = (0, 1, 2)
BATCH_SIZES = (8, 32, 128)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out-kind", default="int64", choices=["int64", "compact", "prefetch"])
    args = p.parse_args()
    tmp = None if args.data else Path(tempfile.mkdtemp(prefix="streamtok-scaling-"))
    data = Path(args.data) if args.data else make_data(tmp, 256_000_000)
    rows = []
    try:
        for b in BATCH_SIZES:
            batches = max(20, (3200 if args.quick else 12800) // b)
            settings = {
                "batch_size": b, "seq_len": args.seq_len, "warmup": batches // 4, "batches": batches,
                "repeats": 3 if args.quick else 5, "trainer_batches": 20, "step_ms": 0.0, "cold_batches": 0,
                "warmup_s": 1.5 if args.quick else 4.0,
            }
            names = ["nanogpt"] + [f"streamtok:mode=shuffle,workers={w},out={args.out_kind}" for w in WORKERS]
            for r in run_all(names, data, settings):
                rows.append({"batch_size": b, **r})
                print(f"B={b:4d} {r['name']:45s} {r.get('tokens_per_s', 0) / 1e6:8.1f}M tok/s  "
                      f"x{r.get('x_baseline', 0):.2f}", flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n| batch size | nanoGPT | " + " | ".join(f"streamtok w={w}" for w in WORKERS) + " |")
    print("|---:|---:|" + "---:|" * len(WORKERS))
    for b in BATCH_SIZES:
        cells = [r for r in rows if r["batch_size"] == b]
        print(f"| {b} | " + " | ".join(f"{r['tokens_per_s'] / 1e6:.0f}M ({r['x_baseline']:.1f}x)" for r in cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
