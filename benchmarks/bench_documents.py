"""Documents: index build rate, tokens cropped by packing, rows cut mid-document, tokens/s.

Synthetic documents with log-normal lengths like fineweb-edu's: ``ln L ~ N(ln 600, 1.0)``,
so median 600 tokens, mean ~990, p90 ~2160, a long tail (``--median``, ``--sigma``); each
starts with BOS (50256) in uint16 llm.c shards, as llm.c's fineweb script writes them.

1. index: a document index for ``--index-gib`` GiB of shards (written here, in the page
   cache), by 1 and by 2 processes (one per core).
2. crop: the share of an epoch's tokens that ``"pack"`` drops, at T=1024 and 2048 (blocks of
   ``--buffer`` documents). Against nanochat's own loader: ``bench_nanochat_pack.py``.
3. rows that start mid-document in ``"stream"`` mode, and tokens/s of every mode (``--workers``,
   default 0; interleaved rounds, the median; per wall second and per CPU second of this
   process, which with workers misses theirs), relative to ``"stream"``. Each batch's ``doc``
   is made (``cu_seqlens``); ``position_ids`` are made on first use, asked for only by the
   ``mask+position_ids`` contestant. A round is ``--batches`` batches, best a multiple of 64:
   ``"mask"`` and ``"bos"`` look their boundaries up 64 steps at a time, and rounds holding
   one lookup more than others would spread the medians.

Usage::

    python benchmarks/bench_documents.py [--index-gib 1] [--docs 200000] [--rounds 7] [--workers 0]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import streamtok
from streamtok._formats import write_shard
from streamtok.documents.samplers import pack_block
from streamtok.documents.sidecar import write_document_index

BOS = 50256


def lengths(n: int, median: float, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(1, rng.lognormal(np.log(median), sigma, n)).astype(np.int64)


def write_docs(directory: Path, n_tokens: int, shards: int, median: float, sigma: float, seed: int = 0) -> None:
    """Shards of random ids with BOS at each document start."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = n_tokens // shards
    for k in range(shards):
        tokens = rng.integers(0, 50000, per, dtype=np.uint16)
        ls = lengths(per // int(median) + 16, median, sigma, seed + k + 1)
        starts = np.concatenate(([0], np.cumsum(ls)))
        tokens[starts[starts < per]] = BOS
        write_shard(directory / f"docs_{k:04d}.bin", tokens)


def pack_crop(ls: np.ndarray, cap: int, buffer: int) -> float:
    """Cropped share of ``"pack"``: blocks of ``buffer`` documents, each packed alone."""
    delivered = 0
    for b in range(0, len(ls), buffer):
        delivered += len(pack_block(ls[b : b + buffer], cap)) * cap
    return 1 - delivered / int(ls.sum())


def index_rate(data: Path, processes: int) -> float:
    paths = sorted(str(p) for p in data.glob("*.bin"))
    for p in data.glob("*.docidx"):
        p.unlink()
    t = time.perf_counter()
    if processes == 1:
        for p in paths:
            write_document_index(p)
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(write_document_index, paths)
    return time.perf_counter() - t


def throughput(data: Path, seq_len: int, batch_size: int, rounds: int, batches: int,
               workers: int = 0) -> dict[str, tuple[float, float, float, float]]:
    """Per mode: (tokens per wall second, tokens per CPU second of this process), medians, the
    median over rounds of its CPU rate over ``"stream"``'s in the same round (paired: a change
    of load between rounds cancels out), and ``"stream"``'s CPU seconds over all rounds over
    its own (the ratio of totals: work done in bursts, e.g. a block packed every few rounds,
    counts in full, where a median of rounds can miss it).

    With ``num_workers=0`` all the loader's work is this process's, so CPU time is the
    steadier measure on a machine other jobs share (their load stretches wall time only).
    """
    def batches_of(documents: str, position_ids: bool = False):
        loader = streamtok.loader(data, seq_len=seq_len, batch_size=batch_size, split="all", epochs=None,
                                  documents=documents, metrics=False, num_workers=workers)
        if not position_ids:
            return iter(loader)
        return (b if b[2].position_ids is None else b for b in loader)  # asks for them, as RoPE would

    its = {m: batches_of(m) for m in ("stream", "mask", "bos", "pack")}
    its["mask+position_ids"] = batches_of("mask", position_ids=True)
    for it in its.values():
        for _ in range(batches):
            next(it)
    wall: dict[str, list[float]] = {m: [] for m in its}
    cpu: dict[str, list[float]] = {m: [] for m in its}
    tokens = batches * batch_size * seq_len
    for _ in range(rounds):
        for m, it in its.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(batches):
                next(it)
            wall[m].append(tokens / (time.perf_counter() - t))
            cpu[m].append(tokens / (time.process_time() - c))
    total = {m: sum(tokens / r for r in cpu[m]) for m in its}
    return {m: (statistics.median(wall[m]), statistics.median(cpu[m]),
                statistics.median(c / s for c, s in zip(cpu[m], cpu["stream"])), total["stream"] / total[m]) for m in its}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index-gib", type=float, default=1.0)
    p.add_argument("--docs", type=int, default=200_000, help="documents for the crop comparison")
    p.add_argument("--buffer", type=int, default=1000)
    p.add_argument("--median", type=float, default=600.0)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--tokens", type=int, default=64_000_000, help="tokens of data for tokens/s")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", type=int, default=128, help="batches per round (a multiple of 64)")
    p.add_argument("--workers", type=int, default=0, help="num_workers of every loader")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="streamtok-docs-"))
    try:
        if args.index_gib > 0:
            n = int(args.index_gib * (1 << 30)) // 2
            write_docs(tmp / "index", n, 4, args.median, args.sigma)
            for procs in (1, 2):
                s = index_rate(tmp / "index", procs)
                print(f"index: {args.index_gib:g} GiB ({n:,} tokens, 4 shards), {procs} process(es): "
                      f"{s:.2f} s, {args.index_gib / s:.2f} GiB/s")
            shutil.rmtree(tmp / "index")
        ls = lengths(args.docs, args.median, args.sigma, seed=1)
        print(f"documents: {len(ls):,}, median {np.median(ls):.0f}, mean {ls.mean():.0f}, "
              f"p90 {np.percentile(ls, 90):.0f}, max {ls.max()}")
        for T in (1024, 2048):
            print(f"crop T={T} buffer={args.buffer}: pack {pack_crop(ls, T + 1, args.buffer):.1%}")
        for T in (1024, 2048) if args.tokens else ():
            if T == 1024:
                write_docs(tmp / "tp", args.tokens, 2, args.median, args.sigma)
            loader = streamtok.loader(tmp / "tp", seq_len=T, batch_size=64, split="all", metrics=False)
            firsts = np.concatenate([x[:, 0].numpy() for x, _ in loader])
            print(f"stream T={T}: {np.mean(firsts != BOS):.1%} of {len(firsts):,} rows start mid-document")
            rates = throughput(tmp / "tp", T, args.batch_size, args.rounds, args.batches, args.workers)
            for i, kind in enumerate(("wall", "CPU")):
                base = rates["stream"][i]
                print(f"tokens/{kind} s T={T} B={args.batch_size} workers={args.workers}: " + ", ".join(
                    f"{m} {r[i] / 1e6:.0f}M ({r[i] / base:.2f}x)" for m, r in rates.items()))
            print(f"paired CPU ratio to stream T={T} (median over rounds): " + ", ".join(
                f"{m} {r[2]:.2f}x" for m, r in rates.items() if m != "stream"))
            print(f"CPU ratio to stream T={T} (totals over rounds): " + ", ".join(
                f"{m} {r[3]:.3f}x" for m, r in rates.items() if m != "stream"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, shared with other jobs")


if __name__ == "__main__":
    main()
