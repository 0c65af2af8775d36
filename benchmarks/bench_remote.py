"""Reading from object storage, side by side: streamtok ("windows", "blocks") against the same
loader on local warm data, MosaicML Streaming and LitData, all on one loopback S3 server.

The server is moto's S3 on 127.0.0.1 behind tests/s3_server.py's proxy, which adds
``--latency`` seconds to every request and caps the bandwidth of all responses together
(``--bandwidth`` bytes/s). Each contestant runs in its own process, reads the same tokens
(GPT-2-range uint16, windows of T+1 = 1025 tokens, batches of B = 32, an exact shuffle where
the reader has one) for ``--epochs`` epochs with ``--workers`` DataLoader workers, and is
measured by the proxy (requests, response bytes) and by a watcher that polls its cache
directory's size every 20 ms (peak cache bytes). The peers write the data with their own
writers (MDSWriter, litdata.optimize) and get the same cache limit as streamtok's "blocks";
their interpreter is ``--peers-python`` (see benchmarks/_remote_peers.py for the two
adjustments their imports need here). Reported per contestant: tokens/s over the whole run
(opening included), time to first batch, requests/s, bytes fetched per byte used, peak cache
bytes, and the ratio of tokens/s (after the first batch) to local warm data. Usage::

    python benchmarks/bench_remote.py [--tokens 4194304] [--epochs 2] [--only windows,blocks]

The default run (4M tokens = 8 MB, cache limit 4 MiB = half the data, 1 MiB blocks) takes a
few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

CONTESTANTS = ("local-warm", "windows", "blocks", "mosaicml-streaming", "litdata")


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


class CacheWatcher:
    """Polls a directory's total file size every ``interval_s`` and keeps the peak."""

    def __init__(self, path: Path, interval_s: float = 0.02):
        self.path, self.interval_s, self.peak = path, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _dir_bytes(self.path))
            time.sleep(self.interval_s)

    def __enter__(self) -> CacheWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _dir_bytes(self.path))


def run_streamtok(kind: str, source: str, cache: str, limit: int, block: int, batch: int, seq_len: int,
                  workers: int, epochs: int, result: str) -> None:
    """One streamtok contestant (in its own process): ``local-warm``, ``windows`` or ``blocks``."""
    t0 = time.perf_counter()
    import streamtok

    kw: dict = dict(seq_len=seq_len, batch_size=batch, epochs=epochs, num_workers=workers, seed=0,
                    mode="shuffle", metrics=False, split="all")
    if kind == "windows":
        kw.update(fetch="windows")
    elif kind == "blocks":
        kw.update(fetch="blocks", cache_dir=cache, cache_limit=limit, storage_options={"block_bytes": block})
    loader = streamtok.loader(source, **kw)
    first, tokens, batches = None, 0, 0
    for x, _ in loader:
        if first is None:
            first = time.perf_counter() - t0
        tokens += x.shape[0] * (x.shape[1] + 1)
        batches += 1
    wall = time.perf_counter() - t0
    with open(result, "w") as f:
        json.dump({"tokens": tokens, "batches": batches, "wall_s": wall, "first_batch_s": first}, f)


def _write_shards(root: Path, n_tokens: int, n_shards: int) -> None:
    from streamtok._formats import write_shard

    rng = np.random.default_rng(0)
    for k in range(n_shards):
        write_shard(root / f"fw_train_{k:06d}.bin", rng.integers(0, 50257, n_tokens // n_shards, dtype=np.uint16))


def _run(cmd: list[str], env: dict, timeout_s: float) -> str | None:
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f} s"
    if out.returncode != 0:
        return f"failed: {(out.stderr or out.stdout).strip().splitlines()[-1][:200]}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1 << 22)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.03)
    ap.add_argument("--bandwidth", type=float, default=100e6, help="bytes/s, all responses together")
    ap.add_argument("--cache-bytes", type=int, default=4 << 20)
    ap.add_argument("--block-bytes", type=int, default=1 << 20)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--only", default=",".join(CONTESTANTS))
    ap.add_argument("--memory", action="store_true",
                    help="the proxy answers ranged GETs from its copy of each object (moto's per-request CPU out of the way)")
    ap.add_argument("--peers-python", default=str(HERE.parent / ".venv-peers" / "bin" / "python"))
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if "--run" in sys.argv:
        return
    from s3_server import start_s3

    only = args.only.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    shards = tmp / "shards"
    _write_shards(shards, args.tokens, args.shards)
    server = start_s3()
    bucket = server.create_bucket("bench")
    server.upload_dir(shards, bucket, "st/")
    env = {**os.environ, **server.env(), "S3_ENDPOINT_URL": server.endpoint, "STREAMTOK_CACHE_DIR": str(tmp / "meta"),
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE.parent / "tests")])}
    peers = Path(args.peers_python)
    notes: dict[str, str] = {}
    for name, writer, prefix in (("mosaicml-streaming", "write-mds", "mds/"), ("litdata", "write-litdata", "lit/")):
        if name not in only:
            continue
        if not peers.exists():
            notes[name] = f"not run: no interpreter at {peers}"
            continue
        err = _run([str(peers), str(HERE / "_remote_peers.py"), writer, str(shards), str(tmp / prefix), str(args.seq_len)],
                   env, args.timeout)
        if err:
            notes[name] = f"writer {err}"
            continue
        server.upload_dir(tmp / prefix, bucket, prefix)
    rows = []
    used_per_token = 2  # uint16
    for name in only:
        if name in notes:
            rows.append({"name": name, "note": notes[name]})
            continue
        cache = tmp / f"cache-{name}"
        cache.mkdir()
        result = tmp / f"{name}.json"
        common = [str(args.cache_bytes)]
        if name in ("local-warm", "windows", "blocks"):
            source = str(shards) if name == "local-warm" else f"s3://{bucket}/st/"
            if name == "local-warm":
                for p in shards.iterdir():
                    p.read_bytes()  # warm the page cache
            cmd = [sys.executable, __file__, "--run", name, source, str(cache), *common, str(args.block_bytes),
                   str(args.batch), str(args.seq_len), str(args.workers), str(args.epochs), str(result)]
        else:
            sub = "read-mds" if name == "mosaicml-streaming" else "read-litdata"
            prefix = "mds" if name == "mosaicml-streaming" else "lit"
            cmd = [str(peers), str(HERE / "_remote_peers.py"), sub, f"s3://{bucket}/{prefix}", str(cache), *common,
                   str(args.batch), str(args.seq_len), str(args.workers), str(args.epochs), str(result)]
        server.proxy.reset()
        server.proxy.latency_s = args.latency
        server.proxy.set_bandwidth(args.bandwidth)
        server.proxy.memory = args.memory
        with CacheWatcher(cache) as watch:
            err = _run(cmd, env, args.timeout)
        c = server.proxy.counters
        if err:
            rows.append({"name": name, "note": err})
            continue
        r = json.loads(result.read_text())
        used = r["tokens"] * used_per_token
        steady = r["tokens"] * (1 - 1 / r["batches"]) / (r["wall_s"] - r["first_batch_s"])
        rows.append({"name": name, "tokens_per_s": r["tokens"] / r["wall_s"], "steady_tokens_per_s": steady,
                     "first_batch_s": r["first_batch_s"],
                     "requests": c.requests, "requests_per_s": c.requests / r["wall_s"], "fetched_bytes": c.body_bytes,
                     "fetched_per_used": c.body_bytes / used if used else None, "peak_cache_bytes": watch.peak,
                     "tokens": r["tokens"], "wall_s": r["wall_s"]})
    server.stop()
    base = next((r["steady_tokens_per_s"] for r in rows if r["name"] == "local-warm" and "tokens_per_s" in r), None)
    print(f"{args.tokens} tokens in {args.shards} shards, B={args.batch}, T={args.seq_len}, {args.epochs} epochs, "
          f"num_workers={args.workers}, {args.latency * 1000:.0f} ms per request, {args.bandwidth / 1e6:.0f} MB/s cap, "
          f"cache limit {args.cache_bytes >> 20} MiB, blocks of {args.block_bytes >> 20} MiB"
          + (", ranged GETs answered from the proxy's copy" if args.memory else ""))
    print("| reader | tokens/s after the first batch | vs local warm | tokens/s whole run | first batch | requests | "
          "requests/s | fetched / used | peak cache |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "note" in r:
            print(f"| {r['name']} | {r['note']} | | | | | | | |")
            continue
        ratio = f"{r['steady_tokens_per_s'] / base:.2f}x" if base else "–"
        print(f"| {r['name']} | {r['steady_tokens_per_s'] / 1e6:.2f}M | {ratio} | {r['tokens_per_s'] / 1e6:.2f}M | "
              f"{r['first_batch_s']:.2f} s | {r['requests']} | "
              f"{r['requests_per_s']:.0f} | {r['fetched_per_used']:.2f} | {r['peak_cache_bytes'] / 2**20:.1f} MiB |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--run":
        kind, source, cache, limit, block, b, t, w, e, result = sys.argv[2:]
        run_streamtok(kind, source, cache, int(limit), int(block), int(b), int(t), int(w), int(e), result)
    else:
        main()
