"""Memory: the loader's RSS does not grow with the data (1 GB vs 10 GB of tokens; 1M vs 100M windows).

Sparse llm.c shards (a header, then a hole: no disk space, reads return token 0) of 100M
tokens each, as fineweb's are. For each size a fresh process imports streamtok, notes its
anonymous RSS, builds ``streamtok.loader`` (shuffle, T=1024, B=32), takes 200 batches, and
reports the process tree's anonymous and file-backed RSS: the loader's own memory is the
anonymous growth. Usage::

    python benchmarks/bench_memory.py [--dir DIR] [--out memory.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from streamtok._formats import llmc_header

SHARD_TOKENS = 100_000_000
T = 1024
CASES = (  # label, tokens
    ("1 GB of tokens", 500_000_000),
    ("1M windows", 1_000_000 * (T + 1)),
    ("10 GB of tokens", 5_000_000_000),
    ("100M windows", 100_000_000 * (T + 1)),
)

CHILD = r"""
import json, sys, psutil
import streamtok, torch
def tree():
    me = psutil.Process(); procs = [me] + me.children(recursive=True); out = {"anon": 0, "file": 0}
    for p in procs:
        for line in open(f"/proc/{p.pid}/status"):
            k = line.split(":")[0]
            if k in ("RssAnon", "RssFile"):
                out[k[3:].lower()] += int(line.split()[1]) * 1024
    return out
base = tree()
ld = streamtok.loader(sys.argv[1], seq_len=1024, batch_size=32, split="all", mode="shuffle",
                      num_workers=int(sys.argv[2]), epochs=None)
it = iter(ld)
for _ in range(200):
    next(it)
now = tree()
s = ld.collator.source
print(json.dumps({"base": base, "after": now, "windows": s.n_samples, "shards": len(ld.collator.reader.infos)}))
"""


def make_sparse(directory: Path, n_tokens: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    k = 0
    while n_tokens > 0:
        n = min(SHARD_TOKENS, n_tokens)
        path = directory / f"sparse_{k:06d}.bin"
        with open(path, "wb") as f:
            f.write(llmc_header(n, np.dtype(np.uint16)).tobytes())
            f.truncate(1024 + 2 * n)
        n_tokens, k = n_tokens - n, k + 1
    return directory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="where the sparse shards go (default: a temp dir, removed after)")
    p.add_argument("--out")
    args = p.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="streamtok-memory-"))
    rows = []
    try:
        for label, tokens in CASES:
            data = make_sparse(root / label.replace(" ", "_"), tokens)
            for workers in (0, 2):
                out = subprocess.run([sys.executable, "-c", CHILD, str(data), str(workers)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r.update(label=label, tokens=tokens, workers=workers)
                rows.append(r)
                mib = 2**20
                print(f"{label:16s} w={workers} windows={r['windows']:>11,} shards={r['shards']:5d} "
                      f"anon {r['base']['anon'] / mib:6.0f} -> {r['after']['anon'] / mib:6.0f} MiB  "
                      f"file {r['after']['file'] / mib:6.0f} MiB", flush=True)
            shutil.rmtree(data, ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| data | windows | shards | workers | anon RSS before loader | anon RSS after 200 batches | loader's own (anon growth) | file RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mib = 2**20
        print(f"| {r['label']} | {r['windows']:,} | {r['shards']} | {r['workers']} | {r['base']['anon'] / mib:.0f} MiB | "
              f"{r['after']['anon'] / mib:.0f} MiB | {(r['after']['anon'] - r['base']['anon']) / mib:.0f} MiB | "
              f"{r['after']['file'] / mib:.0f} MiB |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
