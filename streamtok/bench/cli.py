"""``streamtok bench``: streamtok against the loaders people use, on the same data and machine.

Builds synthetic GPT-2-range shards in a temporary directory (or reads ``--data DIR``),
then runs each contestant in its own process (``streamtok.bench.run``: cold cache, warm
median of repeats, trainer-thread cost under a simulated step, peak RSS) and prints one
table with ratios to nanoGPT's ``get_batch``. ``--quick`` takes about a minute on 2 cores;
``--json`` prints the results for machines. Contestant names are described in
:mod:`streamtok.bench.contestants`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._formats import probe_shard, write_shard
from ..cli import plain
from .contestants import parse, shard_files

BASELINE = "nanogpt"
QUICK = (
    "nanogpt", "floor", "mapstyle:workers=0", "mapstyle:workers=2",
    "streamtok:mode=shuffle,workers=0", "streamtok:mode=shuffle,workers=0,out=compact",
    "streamtok:mode=random,workers=0", "streamtok:mode=shuffle,workers=2",
    "streamtok:mode=shuffle,workers=2,out=prefetch",
    "streamtok:mode=shuffle,workers=0,mix=3", "streamtok:mode=shuffle,workers=2,mix=3",
)
FULL = (
    "nanogpt", "floor", "mapstyle:workers=0", "mapstyle:workers=2",
    "streamtok:mode=shuffle,workers=0", "streamtok:mode=shuffle,workers=0,out=compact",
    "streamtok:mode=random,workers=0", "streamtok:mode=random,workers=0,out=compact",
    "streamtok:mode=sequential,workers=0",
    "streamtok:mode=shuffle,workers=1", "streamtok:mode=shuffle,workers=2",
    "streamtok:mode=shuffle,workers=2,out=compact", "streamtok:mode=shuffle,workers=2,out=prefetch",
    "streamtok:mode=random,workers=2",
    "streamtok:mode=shuffle,workers=0,mix=3", "streamtok:mode=shuffle,workers=2,mix=3",
)


def make_data(directory: Path, n_tokens: int, *, shards: int = 2, seed: int = 0) -> Path:
    """Write ``shards`` llm.c uint16 shards of ``n_tokens`` GPT-2-range ids in total.

    The ids repeat a random block of 1M tokens (a loader does not care what the ids are,
    and writing 1 GB this way takes seconds, not a minute of random number generation).
    """
    block = np.random.default_rng(seed).integers(0, 50257, 1 << 20, dtype=np.uint16)
    per = n_tokens // shards
    for k in range(shards):
        write_shard(directory / f"bench_{k:06d}.bin", np.resize(np.roll(block, k), per))
    return directory


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import psutil

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def run_contestant(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one contestant in a fresh interpreter; its JSON line, or an ``error`` entry."""
    cmd = [sys.executable, "-m", "streamtok.bench.run", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"name": spec["name"], "error": f"timed out after {timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"name": spec["name"], "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def run_all(names: list[str], data: Path, settings: dict[str, Any], progress: bool = False) -> list[dict[str, Any]]:
    """Measure every contestant on ``data``; adds ``x_baseline`` where the baseline ran."""
    itemsize = int(np.dtype(probe_shard(shard_files(data)[0]).dtype).itemsize)
    results = []
    for name in names:
        spec = {"name": name, "data": str(data), "itemsize": itemsize, **settings}
        t = time.perf_counter()
        res = run_contestant(spec, timeout_s=settings.get("timeout_s", 300))
        res["wall_s"] = round(time.perf_counter() - t, 1)
        if progress:
            print(f"  {name}: {res.get('tokens_per_s', 0) / 1e6:.1f}M tokens/s ({res['wall_s']} s)", file=sys.stderr)
        results.append(res)
    base = next((r.get("tokens_per_s") for r in results if r["name"] == BASELINE), None)
    for r in results:
        if base and "tokens_per_s" in r:
            r["x_baseline"] = r["tokens_per_s"] / base
    return results


def label(name: str) -> str:
    kind, opts = parse(name)
    if kind != "streamtok":
        return name.replace(":", " ").replace("workers=", "w=")
    parts = [opts.get("mode", "shuffle"), f"w={opts.get('workers', '0')}"]
    parts += [f"{k}={v}" for k, v in opts.items() if k not in ("mode", "workers")]
    return "streamtok " + " ".join(parts)


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of the results."""
    head = (
        "| contestant | Mtok/s (median) | x nanoGPT | trainer µs/batch | data wait | "
        "peak RSS anon / file / shm (MiB) | cold read amp (page floor) | cold tok/s vs warm |"
    )
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {label(r['name'])} | error: {r['error']} |||||||")
            continue
        rss = r["peak_rss"]
        mib = " / ".join(f"{rss[k] / 2**20:.0f}" for k in ("anon", "file", "shmem"))
        cold = r.get("cold")
        amp = f"{cold['read_amp']:.1f} ({cold['page_floor']:.1f})" if cold else "-"
        ratio = f"{cold['tokens_per_s'] / r['tokens_per_s']:.2f}" if cold else "-"
        rows.append(
            f"| {label(r['name'])} | {r['tokens_per_s'] / 1e6:.1f} | {r.get('x_baseline', float('nan')):.2f} | "
            f"{r['trainer_us']:.0f} | {100 * r['wait_fraction']:.1f}% | {mib} | {amp} | {ratio} |"
        )
    return "\n".join(rows)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    batches = args.batches or (100 if quick else 400)
    return {
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "warmup": min(batches, 20 if quick else 50),
        "warmup_s": args.warmup_s if args.warmup_s is not None else (1.5 if quick else 4.0),
        "batches": batches,
        "repeats": args.repeats or (3 if quick else 5),
        "trainer_batches": batches if quick else 300,
        "step_ms": args.step_ms,
        "cold_batches": 0 if args.no_cold else min(batches, 64 if quick else 256),
    }


def handler(args: argparse.Namespace) -> int:
    names = args.contestant or list(QUICK if args.quick else FULL)
    settings = settings_from(args)
    tmp = None
    try:
        if args.data:
            data = Path(args.data)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="streamtok-bench-", dir=args.tmp_dir))
            # Shards far larger than a cold run reads, so readahead cannot just read them whole.
            n_tokens = args.tokens or (256_000_000 if args.quick else 512_000_000)
            data = make_data(tmp, n_tokens)
        results = run_all(names, data, settings, progress=not args.json)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {"machine": machine(), "settings": settings, "data": str(args.data or "synthetic"), "results": results}
    if args.json:
        print(json.dumps(json_safe(report), indent=1, allow_nan=False))
    else:
        m = report["machine"]
        print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, {m['os']}, torch {m['torch']}")
        print(f"B={settings['batch_size']}, T={settings['seq_len']}, simulated step {settings['step_ms']} ms\n")
        print(table(results))
    return 1 if any("error" in r for r in results) else 0


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None``: strict JSON, ``null`` for unknown.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON (``jq`` and browsers
    refuse the whole document).

    Args:
        value: a tree of dicts, lists and scalars.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _duration(text: str) -> float:
    """An argparse type: a finite number >= 0 (``nan``, ``inf`` and negatives exit 2 with the reason)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def register(subparsers: Any) -> None:
    """Add ``streamtok bench`` to the ``streamtok`` command."""
    p = subparsers.add_parser("bench", help="benchmark streamtok against nanoGPT and DataLoader peers", description=plain(__doc__))
    p.add_argument("--quick", action="store_true", help="fewer contestants, batches and repeats (about a minute)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--data", help="a directory of existing shards (default: synthetic, in a temporary directory)")
    p.add_argument("--tokens", type=int, help="tokens of synthetic data, in 2 shards (default 256M quick, 512M full)")
    p.add_argument("--tmp-dir", help="where the synthetic data goes (default: the system temp dir)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per batch, B (default 32)")
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per row, T (default 1024)")
    p.add_argument("--batches", type=int, help="batches per timed run (default 100 quick, 400 full)")
    p.add_argument("--repeats", type=int, help="timed runs per contestant; the median is shown (default 3 quick, 5 full)")
    p.add_argument("--warmup-s", type=_duration, help="warm-up time per contestant before timing (default 1.5 quick, 4 full)")
    p.add_argument("--step-ms", type=_duration, default=5.0, help="simulated training step for the trainer-thread cost")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-cache measurement")
    p.add_argument(
        "--contestant", action="append",
        help="run only these (repeatable), e.g. nanogpt, floor, mapstyle:workers=2, "
        "streamtok:mode=random,workers=2,out=compact,advice=random,lookahead=8",
    )
    p.set_defaults(func=handler)
