"""What opening a loader over many remote shards costs, cold and on a restart, beside the server's floor.

Against the loopback S3 server (tests/s3_server.py, run in its own process so that it shares
no interpreter lock with this one: moto behind a proxy adding ``--latency-ms`` to every
request), ``--shards`` llm.c shards of ``--tokens`` tokens are uploaded once. Then, in
alternating rounds, three things are timed on the same server:

- **floor**: a minimal client (obstore directly, no streamtok) making the requests a cold
  open makes: one LIST, then for each shard the same ranged GETs (one GET of a small shard,
  the head and tail ranges of a large one; see ``streamtok.storage.probe``), with ``If-Match``,
  ``max_in_flight`` (256) at once; and the LIST alone (a restart's floor);
- **cold**: ``streamtok.loader("s3://bucket/prefix/")`` with an empty metadata cache, through
  the fingerprint (what ``state_dict`` needs);
- **restart**: the same with the metadata cache of the cold build (the LIST alone, no GET).

With ``--explicit`` the loader is given the 1000 URLs as a list instead of the prefix: no
LIST; cold, one GET per shard that returns its size and ETag with its bytes (a large shard's
tail is a second GET); restart, one HEAD per shard to check it. The floor then makes those
GETs, and those HEADs, itself.

Each line gives the wall seconds, this process's CPU seconds (the client's own cost), the
server process's CPU seconds (moto and the proxy), what the proxy saw (LISTs, ranged GETs,
HEADs, the most requests in flight at once), then the medians and the ratio of streamtok to
the floor. With ``--memory`` the proxy answers ranged GETs from its own copy of each object
(moto then serves only the LIST); its copies are filled by an untimed warm-up pass first, so
every round sees the same server. Usage::

    python benchmarks/bench_remote_open.py [--shards 1000] [--tokens 4096] [--latency-ms 30] [--rounds 5] [--memory] [--explicit]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import streamtok  # noqa: E402
from s3_server import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, s3_process  # noqa: E402
from streamtok._formats import write_shard  # noqa: E402
from streamtok.storage.probe import FINGERPRINT_BYTES, FIRST_BYTES, HEAD_BYTES, OPEN_GAP  # noqa: E402
from streamtok.storage.remote import forget_opened  # noqa: E402

BUCKET = "bench-open"


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _measure(server: ServerProcess, fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` once: wall, client CPU, server CPU and what the proxy saw."""
    server.reset()
    s0 = server.stats()["cpu_s"]
    t, c = time.perf_counter(), _cpu()
    fn()
    wall, cpu = time.perf_counter() - t, _cpu() - c
    st = server.stats()
    return {"wall": wall, "cpu": cpu, "server_cpu": st["cpu_s"] - s0, **{k: st[k] for k in ("lists", "range_gets", "heads", "max_in_flight")}}


def _ranges(size: int) -> list[tuple[int, int]]:
    """The byte ranges a cold open reads of one shard (streamtok.storage.probe's rule)."""
    tail = min(FINGERPRINT_BYTES, size)
    if size - tail - min(size, HEAD_BYTES) <= OPEN_GAP:
        return [(0, size)]
    return [(0, HEAD_BYTES), (size - tail, size)]


class Floor:
    """The same requests as a cold open, made by obstore alone."""

    def __init__(self, endpoint: str, keys: list[str], max_in_flight: int = 256):
        from obstore.store import S3Store

        self.store = S3Store(BUCKET, config={"endpoint": endpoint, "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                                             "region": REGION}, client_options={"allow_http": True}, retry_config={"max_retries": 0})
        self.max_in_flight = max_in_flight
        self.keys = keys

    async def _list(self) -> list[dict[str, Any]]:
        import obstore

        return (await obstore.list_with_delimiter_async(self.store, prefix="ds/"))["objects"]

    async def _open(self) -> int:
        import obstore

        metas = await self._list()
        limit = asyncio.Semaphore(self.max_in_flight)

        async def one(path: str, etag: str, a: int, b: int) -> int:
            async with limit:
                result = await obstore.get_async(self.store, path, options={"range": (a, b), "if_match": etag})
                return len(await result.bytes_async())

        got = await asyncio.gather(*(one(m["path"], m["e_tag"], a, b) for m in metas for a, b in _ranges(m["size"])))
        return sum(got)

    async def _open_explicit(self) -> int:
        """Per key: a GET of its first FIRST_BYTES (size and ETag come with it), then its tail if larger."""
        import obstore

        limit = asyncio.Semaphore(self.max_in_flight)

        async def one(path: str) -> int:
            async with limit:
                result = await obstore.get_async(self.store, path, options={"range": (0, FIRST_BYTES)})
                n = len(await result.bytes_async())
            size, etag = result.meta["size"], result.meta["e_tag"]
            if size > n:
                async with limit:
                    tail = await obstore.get_async(self.store, path, options={"range": (size - FINGERPRINT_BYTES, size), "if_match": etag})
                    n += len(await tail.bytes_async())
            return n

        return sum(await asyncio.gather(*(one(k) for k in self.keys)))

    async def _heads(self) -> int:
        import obstore

        limit = asyncio.Semaphore(self.max_in_flight)

        async def one(path: str) -> int:
            async with limit:
                return (await obstore.head_async(self.store, path))["size"]

        return len(await asyncio.gather(*(one(k) for k in self.keys)))

    def open(self) -> int:
        return asyncio.run(self._open())

    def list(self) -> int:
        return len(asyncio.run(self._list()))

    def open_explicit(self) -> int:
        return asyncio.run(self._open_explicit())

    def heads(self) -> int:
        return asyncio.run(self._heads())


def _build(url: str | list[str]) -> str:
    loader = streamtok.loader(url, seq_len=64, batch_size=8, split="all", metrics=False, lookahead=1)
    return loader.collator.reader.fingerprint


def _line(name: str, m: dict[str, Any]) -> str:
    return (f"{name:14s} {m['wall']:6.2f} s wall, {m['cpu']:5.2f} s client CPU, {m['server_cpu']:5.2f} s server CPU, "
            f"{m['lists']} LIST + {m['range_gets']} ranged GETs + {m['heads']} HEADs, up to {m['max_in_flight']} in flight")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--tokens", type=int, default=4096, help="tokens per shard")
    p.add_argument("--latency-ms", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--memory", action="store_true", help="the proxy answers ranged GETs from its copy (moto serves the LIST only)")
    p.add_argument("--explicit", action="store_true", help="give the loader the list of URLs, not the prefix")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-open-"))
    os.environ["STREAMTOK_CACHE_DIR"] = str(tmp / "cache")
    rng = np.random.default_rng(0)
    results: dict[str, list[dict[str, Any]]] = {"floor, open": [], "floor, LIST": [], "cold": [], "restart": []}
    try:
        with s3_process(latency_ms=args.latency_ms, memory=args.memory) as server:
            server.client.create_bucket(Bucket=BUCKET)
            for k in range(args.shards):
                write_shard(tmp / "one.bin", rng.integers(0, 50000, args.tokens, dtype=np.uint16))
                server.client.put_object(Bucket=BUCKET, Key=f"ds/shard_{k:06d}.bin", Body=(tmp / "one.bin").read_bytes())
            keys = [f"ds/shard_{k:06d}.bin" for k in range(args.shards)]
            url: str | list[str] = [f"s3://{BUCKET}/{key}" for key in keys] if args.explicit else f"s3://{BUCKET}/ds/"
            import torch  # noqa: F401 - imported before timing (the loader's first build would pay for it)

            floor = Floor(server.endpoint, keys)
            floor_open, floor_restart = (floor.open_explicit, floor.heads) if args.explicit else (floor.open, floor.list)
            print(_line("warm-up", _measure(server, floor.open)) + " (untimed: fills the proxy's copies, warms both clients)", flush=True)
            forget_opened()
            _build(url)
            for r in range(args.rounds):
                shutil.rmtree(tmp / "cache", ignore_errors=True)
                forget_opened()  # as a new process would: only the metadata cache on disk remains
                for kind, fn in (("floor, open", floor_open), ("cold", lambda: _build(url)),
                                 ("floor, LIST", floor_restart), ("restart", lambda: _build(url))):
                    if kind == "restart":
                        forget_opened()
                    m = _measure(server, fn)
                    results[kind].append(m)
                    print(f"round {r} " + _line(kind, m), flush=True)
            med = {k: {f: statistics.median(m[f] for m in v) for f in ("wall", "cpu", "server_cpu")} for k, v in results.items()}
            print(f"\n{args.shards} shards of {args.tokens} tokens{', a list of URLs' if args.explicit else ''}, "
                  f"{args.latency_ms:g} ms per request, {'proxy copies' if args.memory else 'moto serves every GET'}, "
                  f"median of {args.rounds} ('floor, LIST': {'one HEAD per shard' if args.explicit else 'the LIST'}):")
            for kind, m in med.items():
                print(f"  {kind:12s} {m['wall']:6.2f} s wall, {m['cpu']:5.2f} s client CPU, {m['server_cpu']:5.2f} s server CPU")
            print(f"  streamtok / floor: cold {med['cold']['wall'] / med['floor, open']['wall']:.2f}x, "
                  f"restart {med['restart']['wall'] / med['floor, LIST']['wall']:.2f}x (per round: "
                  + ", ".join(f"{c['wall'] / f['wall']:.2f}" for c, f in zip(results["cold"], results["floor, open"])) + ")")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
