"""What it costs to prove a document index belongs to its shard (issue 19, item 5).

Version 1 of the ``.docidx`` key held the shard's size, mtime and three 64 KiB content samples:
cheap (three small reads) but blind to a same-size edit elsewhere. Version 2 holds the sha256
of the whole shard, remembered per inode/size/mtime/ctime (``streamtok._digest``). This
measures, on one warm shard, in rotating rounds: the scan that builds an index, a full sha256,
the old sample key, ``document_starts`` the first time (hash + scan + write) and afterwards
(a ``stat``, the memo, the sidecar and a hash of its starts). Usage::

    python benchmarks/bench_docidx.py [--tokens 128000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from streamtok._digest import file_sha256
from streamtok.bench.cli import make_data
from streamtok.bench.run import warm
from streamtok.documents.sidecar import GPT2_EOT, document_starts, scan_document_starts, sidecar_paths


def _v1_key(path: Path) -> int:
    size = os.stat(path).st_size
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for at in (0, max(0, size // 2 - 32768), max(0, size - 65536)):
            f.seek(at)
            h.update(f.read(65536))
    return int.from_bytes(h.digest(), "little")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128_000_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="streamtok-docidx-"))
    os.environ["STREAMTOK_CACHE_DIR"] = str(tmp / "cache")
    try:
        make_data(tmp, args.tokens, shards=1)
        shard = next(tmp.glob("*.bin"))
        warm([shard])
        gib = shard.stat().st_size / 2**30

        def cold() -> None:
            for side in sidecar_paths(shard):
                side.unlink(missing_ok=True)
            shutil.rmtree(tmp / "cache", ignore_errors=True)
            document_starts(shard)

        tasks = {
            "scan (build the starts)": lambda: scan_document_starts(shard, GPT2_EOT),
            "sha256 of the whole shard": lambda: file_sha256(str(shard), None),
            "v1 key (3 x 64 KiB samples)": lambda: _v1_key(shard),
            "document_starts, first use": cold,
            "document_starts, then": lambda: document_starts(shard),
        }
        times: dict[str, list[float]] = {k: [] for k in tasks}
        names = list(tasks)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name == "document_starts, then":
                    document_starts(shard)  # the memo and sidecar exist
                t = time.perf_counter()
                tasks[name]()
                times[name].append(time.perf_counter() - t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"one shard of {args.tokens:,} uint16 tokens ({gib:.2f} GiB), warm page cache, {args.rounds} rounds, medians")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:30s} {med * 1e3:10.2f} ms   {med / gib:8.3f} s/GiB")


if __name__ == "__main__":
    main()
