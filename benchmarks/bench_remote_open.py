"""What opening a loader over many remote shards costs: cold, and a restart with the metadata cache.

Against the loopback S3 server (tests/s3_server.py, run in its own process so that it does not
share this process's interpreter lock: moto behind a proxy adding ``--latency-ms`` to every
request), ``--shards`` small llm.c shards are uploaded once; then, in alternating rounds, a
loader is built from ``s3://bucket/prefix/`` with an empty metadata cache (cold: one LIST, a
header GET and a tail GET per shard, concurrently) and again with the cache of the previous
build (a restart: the LIST alone), each time through the fingerprint (what ``state_dict``
needs). Prints per round the wall seconds, this process's CPU seconds (the client's own cost;
the rest is waiting on the server) and the client's request counts, then the medians. The
loopback server is Python (moto) and serves a request in milliseconds of CPU: on a small
machine it, not the client, bounds the cold time. Usage::

    python benchmarks/bench_remote_open.py [--shards 1000] [--latency-ms 30] [--rounds 3] [--memory]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from s3_server import s3_in_subprocess  # noqa: E402

import streamtok  # noqa: E402
from streamtok._formats import write_shard  # noqa: E402
from streamtok.storage.remote import forget_opened  # noqa: E402


def _build(url: str) -> tuple[float, float, str, object]:
    t, cpu = time.perf_counter(), time.process_time()
    loader = streamtok.loader(url, seq_len=64, batch_size=8, split="all", metrics=False, lookahead=1)
    fingerprint = loader.collator.reader.fingerprint
    counters = loader.collator.reader.remote.store.counters
    return time.perf_counter() - t, time.process_time() - cpu, fingerprint, counters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--tokens", type=int, default=4096, help="tokens per shard")
    p.add_argument("--latency-ms", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--memory", action="store_true", help="the proxy answers ranged GETs from its copy (less server CPU per request)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-open-"))
    os.environ["STREAMTOK_CACHE_DIR"] = str(tmp / "cache")
    rng = np.random.default_rng(0)
    try:
        with s3_in_subprocess(latency_ms=args.latency_ms, memory=args.memory) as client:
            bucket = "bench-open"
            client.create_bucket(Bucket=bucket)
            for k in range(args.shards):
                write_shard(tmp / "one.bin", rng.integers(0, 50000, args.tokens, dtype=np.uint16))
                client.put_object(Bucket=bucket, Key=f"ds/shard_{k:06d}.bin", Body=(tmp / "one.bin").read_bytes())
            url = f"s3://{bucket}/ds/"
            import torch  # noqa: F401 - imported before timing (the loader's first build would pay for it)

            cold, warm = [], []
            for r in range(args.rounds):
                shutil.rmtree(tmp / "cache", ignore_errors=True)
                for kind, out in (("cold", cold), ("restart", warm)):
                    forget_opened()  # as a new process would: only the metadata cache on disk remains
                    seconds, cpu, fp, c = _build(url)
                    out.append((seconds, cpu))
                    print(f"round {r} {kind:7s}: {seconds:6.2f} s wall, {cpu:5.2f} s client CPU, {c.requests} requests "
                          f"({c.retries} retried), fingerprint {fp}", flush=True)
            for kind, out in (("cold", cold), ("restart", warm)):
                print(f"{args.shards} shards, {args.latency_ms:g} ms per request, {kind}: median {statistics.median(s for s, _ in out):.2f} s "
                      f"wall, {statistics.median(c for _, c in out):.2f} s client CPU")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
