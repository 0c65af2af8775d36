"""How many requests in flight the "windows" strategy needs: tokens/s by ``max_in_flight``.

Two llm.c shards of 10M tokens are uploaded to the loopback S3 server (tests/s3_server.py in
its own process, 30 ms added to every request, ranged GETs answered from the proxy's copy so
that moto's per-request cost does not bound the rate). In alternating rounds, the same
shards are read locally (warm) and from ``s3://`` with ``fetch="windows"``, shuffle, B=32,
T=1024, ``num_workers=0``, each ``max_in_flight`` of ``--in-flight``; 10 batches of warm-up, then
``--batches`` timed. No training step: this is the loader alone, so local data is 100x faster;
the question is how the remote rate scales with requests in flight (at 30 ms a request, a
step of 32 windows needs 32 GETs). ``--documents pack --lookahead 0,32`` measures instead what
fetching the pieces of packed rows ahead buys (``lookahead`` 0: each step's pieces are asked
for when the step is gathered). Usage::

    python benchmarks/bench_remote_inflight.py [--in-flight 64,256] [--rounds 2] [--batches 60]
        [--documents pack] [--lookahead 0,32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from s3_server import s3_in_subprocess  # noqa: E402

import streamtok  # noqa: E402
from streamtok._formats import write_shard  # noqa: E402


def _rate(source: str, n: int, **kw: object) -> tuple[float, float, dict | None]:
    loader = streamtok.loader(source, seq_len=1024, batch_size=32, split="all", metrics=False, epochs=None, **kw)
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    for _ in range(10):
        next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    rate = n * 32 * 1024 / (time.perf_counter() - t)
    remote = loader.collator.reader.remote
    stats = remote.stats() if remote is not None else None
    it.close()
    return rate, first, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in-flight", default="64,256")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--documents", default="stream", help="the loader's documents= mode")
    p.add_argument("--lookahead", default="", help="comma-separated lookaheads to compare (default: the loader's)")
    args = p.parse_args()
    docs = {} if args.documents == "stream" else {"documents": args.documents}
    lookaheads: list[int | None] = [int(x) for x in args.lookahead.split(",")] if args.lookahead else [None]
    tmp = Path(tempfile.mkdtemp(prefix="bench-inflight-"))
    os.environ["STREAMTOK_CACHE_DIR"] = str(tmp / "cache")  # document indexes and metadata: not the user's cache
    rng = np.random.default_rng(0)
    for k in range(2):
        tokens = rng.integers(0, 50000, 10_000_000, dtype=np.uint16)
        tokens[rng.random(len(tokens)) < 1 / 400] = 50256  # documents of ~400 tokens, for documents= modes
        write_shard(tmp / "ds" / f"s_{k}.bin", tokens)
    try:
        with s3_in_subprocess(latency_ms=30, memory=True) as client:
            client.create_bucket(Bucket="inflight")
            for k in range(2):
                client.put_object(Bucket="inflight", Key=f"ds/s_{k}.bin", Body=(tmp / "ds" / f"s_{k}.bin").read_bytes())
            for r in range(args.rounds):
                local, _, _ = _rate(str(tmp / "ds"), 200, **docs)
                print(f"round {r}: local warm {local / 1e6:.1f} Mtok/s", flush=True)
                for n in [int(x) for x in args.in_flight.split(",")]:
                    for ahead in lookaheads:
                        kw = {**docs, **({} if ahead is None else {"lookahead": ahead})}
                        rate, first, st = _rate("s3://inflight/ds/", args.batches, storage_options={"max_in_flight": n}, **kw)
                        print(f"round {r}: windows, {args.documents}, lookahead {'default' if ahead is None else ahead}, "
                              f"max_in_flight {n:4d}: {rate / 1e6:.2f} Mtok/s, first batch {first:.2f} s, "
                              f"{st['requests']} requests, fetched/used {st['fetched_bytes'] / st['used_bytes']:.3f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
