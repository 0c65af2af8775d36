"""Text tokenizing throughput: streamtok's local pool and Ray engine against plain tiktoken.

Usage::

    python benchmarks/bench_tokenize.py --mb 20            # the shipped plays, repeated to 20 MB
    python benchmarks/bench_tokenize.py --texts DIR --mb 40 --repeat 2

Builds one ``.txt`` of about ``--mb`` MB (documents separated by blank lines) from ``--texts``
(default: ``data/shakespeare``), then measures MB/s of input text and tokens/s (GPT-2) for:

1. plain tiktoken ``encode_ordinary_batch`` over the documents with 1 and 2 threads, nothing
   written -- the ceiling of any GPT-2 tokenizer on these cores;
2. ``streamtok tokenize`` with the local pool at 1 and 2 processes (llm.c shards, sha256,
   manifest written);
3. ``--engine ray`` on a local 2-CPU Ray cluster (started before timing; its start-up is
   printed apart), same output.

Runs are interleaved (``--repeat`` rounds, best kept) so a busy neighbour slows each alike.
The report ends with a projection of fineweb-edu-100B (100B GPT-2 tokens) on 8 nodes of 64
cores from the measured per-core rate of the Ray engine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import tempfile
import time
from pathlib import Path

from streamtok.prep.encoding import load_encoding
from streamtok.prep.tokenize import TokenizeConfig, tokenize_files

ROOT = Path(__file__).resolve().parent.parent
FINEWEB_TOKENS = 100e9
NODES, CORES = 8, 64


def build_corpus(path: Path, mb: float, texts: Path) -> int:
    target = int(mb * 1e6)
    parts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(texts.glob("*.txt"))]
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            for part in parts:
                f.write(part + "\n\n")
                written += len(part.encode()) + 2
                if written >= target:
                    break
    return os.path.getsize(path)


def plain_batch(path: Path, threads: int) -> tuple[float, int]:
    enc = load_encoding("gpt2")
    t0 = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        docs = [d for d in f.read().split("\n\n") if d.strip()]
    n = sum(map(len, enc.encode_ordinary_batch(docs, num_threads=threads))) + len(docs)
    return time.perf_counter() - t0, n


def streamtok_run(path: Path, **kw) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(dir=path.parent) as out:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the summary line
            m = tokenize_files([str(path)], out, config=TokenizeConfig(shard_tokens=10_000_000), progress=False, **kw)
        return time.perf_counter() - t0, m["n_tokens"]


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (pool workers) so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=Path, default=ROOT / "data" / "shakespeare", help="directory of .txt files (default: the shipped plays)")
    ap.add_argument("--mb", type=float, default=20.0, help="corpus size in MB (default 20)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds, best kept (default 2)")
    ap.add_argument("--unit-mb", type=float, default=2.0, help="text per Ray task in MB (default 2)")
    args = ap.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        nbytes = build_corpus(corpus, args.mb, args.texts)
        load_encoding("gpt2")
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        unit = int(args.unit_mb * 1e6)
        runs = {
            "tiktoken encode_ordinary_batch, 1 thread": (1, lambda: plain_batch(corpus, 1)),
            "tiktoken encode_ordinary_batch, 2 threads": (2, lambda: plain_batch(corpus, 2)),
            "streamtok local pool, 1 process": (1, lambda: streamtok_run(corpus, workers=1)),
            "streamtok local pool, 2 processes": (2, lambda: streamtok_run(corpus, workers=2)),
            "streamtok --engine ray, 2 workers": (2, lambda: streamtok_run(corpus, engine="ray", unit_bytes=unit)),
        }
        streamtok_run(corpus, engine="ray", unit_bytes=unit)  # starts the Ray workers (imports) once
        best = {name: (float("inf"), 0.0, 0) for name in runs}
        load = [os.getloadavg()[0]]
        for _ in range(args.repeat):
            for name, (_, fn) in runs.items():
                cpu0 = cpu_seconds()
                wall, n_tokens = fn()
                best[name] = min(best[name], (wall, cpu_seconds() - cpu0, n_tokens))
        load.append(os.getloadavg()[0])
        ray.shutdown()
    local = {c: best[f"streamtok local pool, {c} process{'es' if c > 1 else ''}"][0] for c in (1, 2)}
    print(f"corpus: {nbytes / 1e6:.1f} MB of {args.texts.name}, {os.cpu_count()} CPUs; Ray cluster start {ray_start:.1f} s (not timed)")
    print(f"| run | cores | seconds | MB/s | M tokens/s | vs local pool, same cores |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (cores, _) in runs.items():
        wall, cpu, n_tok = best[name]
        print(f"| {name} | {cores} | {wall:.2f} | {nbytes / 1e6 / wall:.2f} | {n_tok / wall / 1e6:.2f} | {local[cores] / wall:.2f}x |")
    wall_ray, _, n_tok = best["streamtok --engine ray, 2 workers"]
    per_core = n_tok / wall_ray / 2
    hours = FINEWEB_TOKENS / (per_core * NODES * CORES) / 3600
    print(
        f"\nprojection: fineweb-edu-100B ({FINEWEB_TOKENS / 1e9:.0f}B GPT-2 tokens, ~{FINEWEB_TOKENS * nbytes / n_tok / 1e9:.0f} GB of text "
        f"at this corpus' {nbytes / n_tok:.2f} bytes/token) on {NODES} nodes x {CORES} cores at the Ray engine's "
        f"{per_core / 1e6:.2f}M tokens/s per core: {hours * 60:.0f} min of encoding, if the one writer keeps up: it receives "
        f"and writes {per_core * NODES * CORES * 2 / 1e6:.0f} MB/s of uint16 tokens ({FINEWEB_TOKENS * 2 / 1e9:.0f} GB in all)"
    )
    print(f"1-minute load average before/after: {load[0]:.2f} / {load[1]:.2f} (other processes share these CPUs)")


if __name__ == "__main__":
    main()
