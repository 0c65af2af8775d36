"""What reading shards safely costs per batch, measured interleaved in one process.

A shard rewritten under a running loader (``cp new.bin shard.bin``) must give an error naming
it: never a SIGBUS, never a byte of the new file in a batch (issue 19). The reader now copies
tokens with ``pread`` (a truncated file gives a short read, not a fault) and ``fstat``-s every
shard a batch touched *after* the reads (a rewrite moves the ctime before its bytes become
visible). This runs ``num_workers=0`` loaders over the same warm shards, taking turns:

- ``pread + check after``: as shipped;
- ``mmap copy + check before``: the reader of issue 9 (slice copies out of the memory map
  after one ``fstat`` per shard; a truncation during the copy is a SIGBUS, a same-size
  rewrite between check and copy is read);
- ``mmap copy, no check``: the same without the ``fstat``;
- ``control``: a second shipped loader (its ratio to the first is the noise of the run).

for plain windows (``documents="stream"``) and packed documents (``documents="pack"``: one
read per document piece, ~2 per row), and prints the per-batch medians and ratios. Usage::

    python benchmarks/bench_checks.py [--tokens 64000000] [--rounds 15] [--batches 300]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import types
from pathlib import Path

import streamtok
from streamtok.bench.cli import make_data
from streamtok.bench.run import warm


def _mmap_pieces(check: bool):
    """``MemmapReader.read_pieces`` as the issue-9 reader copied: slices of the map, fstat first."""

    def read_pieces(self, starts, lengths, out):
        offs = self.offset_list
        arrays = {}
        pos = 0
        for s, n, k in zip(starts.tolist(), lengths.tolist(), self.locate(starts).tolist()):
            while n > 0:
                arr = arrays.get(k)
                if arr is None:
                    arr = arrays[k] = self.checked_array(k) if check else self.shard_array(k)
                take = min(n, offs[k + 1] - s)
                out[pos : pos + take] = arr[s - offs[k] : s - offs[k] + take]
                pos, s, n, k = pos + take, s + take, n - take, k + 1
        return out

    return read_pieces


def _round(its: dict, per_batch: dict, r: int, batches: int) -> None:
    names = list(its)
    for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no one always first
        it = its[name]
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        per_batch[name].append((time.perf_counter() - t) / batches * 1e6)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64_000_000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="streamtok-checks-"))
    results = {}
    try:
        data = make_data(tmp, args.tokens)
        warm(sorted(tmp.iterdir()))
        for documents in ("stream", "pack"):
            kw = dict(seq_len=args.seq_len, batch_size=args.batch_size, split="all", epochs=None, metrics=False, documents=documents)
            its = {}
            for name in ("pread + check after", "mmap copy + check before", "mmap copy, no check", "control"):
                loader = streamtok.loader(data, **kw)
                reader = loader.collator.reader
                if name.startswith("mmap"):
                    reader.read_pieces = types.MethodType(_mmap_pieces(check="no check" not in name), reader)
                its[name] = iter(loader)
                for _ in range(100):
                    next(its[name])
            per_batch: dict[str, list[float]] = {n: [] for n in its}
            for r in range(args.rounds):
                _round(its, per_batch, r, args.batches)
            results[documents] = {n: statistics.median(v) for n, v in per_batch.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"B={args.batch_size} T={args.seq_len}, shuffle, num_workers=0, {args.rounds} rounds x {args.batches} batches, warm")
    for documents, med in results.items():
        base = med["pread + check after"]
        print(f"documents={documents}: per batch, median")
        for name, us in med.items():
            print(f"  {name:26s} {us:8.1f} µs  x{us / base:.3f} of shipped")


if __name__ == "__main__":
    main()
