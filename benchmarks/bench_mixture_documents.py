"""Documents inside a mixture against the same documents mode on one source, side by side.

The same shards are read twice per mode: as one source, and as a mixture of three sources
(shards split 2/1/1, weights 0.5/0.3/0.2), both with ``documents=mode`` and ``epochs=None``.
Synthetic documents as in ``bench_documents.py`` (``ln L ~ N(ln 600, 1.0)``, BOS 50256 in
uint16 llm.c shards). Each round runs ``--batches`` batches of the one-source loader and of the
mixture, in alternating order, from iterators kept open (after one warm-up round); a
contestant's rate is tokens per CPU second of this process (``num_workers=0``: all the work
is here), and the ratio is paired: the median over rounds of the mixture's rate over the one
source's in the same round. Usage::

    python benchmarks/bench_mixture_documents.py [--tokens 64000000] [--rounds 9] [--batches 128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_documents import write_docs

import streamtok

WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2}


def _rate(it, batches: int, tokens_per_batch: int) -> float:
    t0 = time.process_time()
    for _ in range(batches):
        next(it)
    return batches * tokens_per_batch / (time.process_time() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64_000_000)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--batches", type=int, default=128)
    p.add_argument("--modes", default="mask,bos,pack")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_docs(root / "all", args.tokens, 4, 600, 1.0)
        shards = sorted((root / "all").glob("*.bin"))
        parts = {"a": shards[:2], "b": shards[2:3], "c": shards[3:]}
        common = dict(seq_len=args.seq_len, batch_size=args.batch_size, split="all", seed=1, epochs=None, metrics=False)
        per_batch = args.seq_len * args.batch_size
        print(f"| mode | one source Mtok/s (median) | mixture of 3 Mtok/s (median) | mixture / one source (paired median, range) |")
        print("|---|---:|---:|---:|")
        for mode in args.modes.split(","):
            one = iter(streamtok.loader(shards, documents=mode, **common))
            mix = iter(streamtok.loader(parts, weights=WEIGHTS, documents=mode, **common))
            _rate(one, args.batches, per_batch), _rate(mix, args.batches, per_batch)  # warm-up
            r_one, r_mix, ratio = [], [], []
            for k in range(args.rounds):
                if k % 2:
                    b, a = _rate(mix, args.batches, per_batch), _rate(one, args.batches, per_batch)
                else:
                    a, b = _rate(one, args.batches, per_batch), _rate(mix, args.batches, per_batch)
                r_one.append(a)
                r_mix.append(b)
                ratio.append(b / a)
            print(
                f"| {mode} | {statistics.median(r_one) / 1e6:.1f} | {statistics.median(r_mix) / 1e6:.1f} | "
                f"{statistics.median(ratio):.2f}x ({min(ratio):.2f}-{max(ratio):.2f}) |", flush=True,
            )


if __name__ == "__main__":
    main()
