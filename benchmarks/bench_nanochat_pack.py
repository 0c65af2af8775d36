"""nanochat's own BOS-aligned best-fit loader against streamtok's ``documents="pack"``.

nanochat's ``nanochat/dataloader.py`` is not part of streamtok and is not copied here: pass the
directory that holds a checkout (or a copy) of it, and this script imports that file as it
is, with two stand-ins for what it imports from the rest of nanochat (``get_dist_info``: one
rank; ``list_parquet_files``: the parquet files written here) and a stand-in tokenizer (the
documents are already token lists; their text is their index).

The same documents go to both: ``--docs`` (30,000) log-normal lengths as in
``bench_documents.py`` (``ln L ~ N(ln 600, 1.0)``, BOS included), document ``i`` being BOS
then ``L_i - 1`` copies of the id ``i + 1``. For nanochat its BOS is ``-(i + 1)`` (its loader
never looks at ids, only at lengths), so every delivered token names its document, even a
document cropped to its BOS alone; in streamtok's rows each piece starts at its BOS (50256).

- nanochat: parquet files of 1,024 rows per row group, read in order; ``buffer_size``
  ``--buffer``. It streams forever and never drains its buffer. Crop, in steady state: over
  its second epoch, ``1 - delivered / tokens of an epoch`` (as many documents enter the
  buffer as leave it). Left over: the documents of epoch 1 not delivered (not even their
  BOS) when it starts reading epoch 2: parked in its buffer.
- streamtok: the documents in two uint16 llm.c shards; ``documents="pack"``, ``block_docs``
  ``--buffer``, ``batch_size=1``, one epoch: crop is ``1 - delivered / all tokens``, every
  document counted (a block's last, unfillable row is dropped and counts as crop).
- tokens/s: both loaders on CPU, ``--batch-size`` rows per batch, ``--rounds`` interleaved
  rounds of ``--batches`` batches; the median. nanochat's includes its stand-in tokenizer
  (a list per document, as its real one returns) and parquet reads.

Usage::

    git clone https://github.com/karpathy/nanochat /tmp/nanochat
    python benchmarks/bench_nanochat_pack.py --nanochat /tmp/nanochat
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

import streamtok
from streamtok._formats import write_shard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_documents import lengths  # noqa: E402

BOS_STREAMTOK = 50256  # the loader's default boundary for uint16 shards


class IdTokenizer:
    """nanochat's tokenizer interface over documents whose text is their index."""

    def __init__(self, doc_lengths: np.ndarray):
        self.lengths = doc_lengths

    def get_bos_token_id(self) -> int:
        return -1  # unused: encode writes each document's own BOS

    def encode(self, texts: list[str], prepend: int | None = None, num_threads: int = 1) -> list[list[int]]:
        out = []
        for text in texts:
            i = int(text)
            out.append([-(i + 1)] + [i + 1] * (int(self.lengths[i]) - 1))  # a BOS that names its document
        return out


def load_nanochat(root: Path, parquet: list[str]) -> types.ModuleType:
    """nanochat's ``dataloader`` module, imported from ``root/nanochat/dataloader.py``."""
    path = root / "nanochat" / "dataloader.py"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; pass --nanochat DIR, a checkout of github.com/karpathy/nanochat")
    package = types.ModuleType("nanochat")
    package.__path__ = [str(root / "nanochat")]
    common = types.ModuleType("nanochat.common")
    common.get_dist_info = lambda: (False, 0, 0, 1)
    dataset = types.ModuleType("nanochat.dataset")
    dataset.list_parquet_files = lambda warn_on_legacy=False: list(parquet)
    sys.modules.update({"nanochat": package, "nanochat.common": common, "nanochat.dataset": dataset})
    spec = importlib.util.spec_from_file_location("nanochat.dataloader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_parquet(directory: Path, n_docs: int, per_file: int = 10_240) -> list[str]:
    """Files of the documents' texts (their indexes), 1,024 rows per row group, plus a val file
    last (nanochat trains on all files but the last)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True)
    paths = []
    for k, lo in enumerate(range(0, n_docs, per_file)):
        texts = [str(i) for i in range(lo, min(n_docs, lo + per_file))]
        paths.append(str(directory / f"shard_{k:05d}.parquet"))
        pq.write_table(pa.table({"text": texts}), paths[-1], row_group_size=1024)
    paths.append(str(directory / "val.parquet"))
    pq.write_table(pa.table({"text": ["0"]}), paths[-1])
    return paths


def write_shards(directory: Path, ls: np.ndarray) -> None:
    directory.mkdir(parents=True)
    ids = np.repeat(np.arange(1, len(ls) + 1, dtype=np.uint16), ls)
    starts = np.concatenate(([0], np.cumsum(ls)[:-1]))
    ids[starts] = BOS_STREAMTOK
    half = int(starts[len(starts) // 2])
    write_shard(directory / "docs_train_000000.bin", ids[:half])
    write_shard(directory / "docs_train_000001.bin", ids[half:])


def nanochat_crop(module: types.ModuleType, ls: np.ndarray, T: int, buffer: int) -> dict:
    """nanochat's crop over its second epoch (steady state), and what its first left undelivered.

    The loader never drains: its buffer carries ~``buffer`` documents from one epoch into the
    next. Over epoch 2 (the batches its state labels 2) as many documents enter the buffer as
    leave it, so ``1 - rows * (T+1) / tokens of an epoch`` is the share of an epoch's tokens it
    does not train on, the figure comparable to streamtok's per-epoch crop.
    """
    loader = module.tokenizing_distributed_data_loader_with_state_bos_bestfit(
        IdTokenizer(ls), 16, T, "train", device="cpu", buffer_size=buffer)
    seen: set[int] = set()
    left = None
    rows = 0
    for inputs, targets, state in loader:
        if state["epoch"] == 1:
            full = np.concatenate([inputs.numpy(), targets.numpy()[:, -1:]], axis=1)
            seen |= set(np.unique(np.abs(full)).tolist())
            continue
        if left is None:  # the first batch that may hold epoch 2's documents
            left = np.setdiff1d(np.arange(1, len(ls) + 1), np.fromiter(seen, dtype=np.int64))
        if state["epoch"] > 2:
            break
        rows += inputs.shape[0]
    left_lengths = ls[left - 1]
    return {
        "crop": 1 - rows * (T + 1) / int(ls.sum()),
        "rows": rows,
        "left_docs": len(left),
        "left_token_share": float(left_lengths.sum() / ls.sum()),
        "left_median": float(np.median(left_lengths)) if len(left) else 0.0,
        "left_longer_than_row": int(np.count_nonzero(left_lengths > T + 1)),
    }


def streamtok_crop(data: Path, ls: np.ndarray, T: int, buffer: int) -> dict:
    """Crop of ``documents="pack"`` over one whole epoch, every document counted."""
    loader = streamtok.loader(data, seq_len=T, batch_size=1, split="all", mode="shuffle", seed=0, epochs=1,
                              documents="pack", block_docs=buffer, metrics=False)
    rows = pieces = 0
    for x, y, _ in loader:
        rows += 1
        # Each piece of a packed row starts at its document's BOS, counted over all T+1 tokens:
        # a document cropped to 1 token is only the last target.
        pieces += int(np.count_nonzero(x[0].numpy() == BOS_STREAMTOK)) + int(y[0, -1] == BOS_STREAMTOK)
    return {"crop": 1 - rows * (T + 1) / int(ls.sum()), "rows": rows, "left_docs": len(ls) - pieces}


def throughput(module: types.ModuleType, data: Path, ls: np.ndarray, T: int, buffer: int, batch_size: int,
               rounds: int, batches: int) -> dict[str, float]:
    """Median tokens/s of both loaders, interleaved rounds (each loader streams on between rounds)."""
    its = {
        "nanochat": (b[:2] for b in module.tokenizing_distributed_data_loader_with_state_bos_bestfit(
            IdTokenizer(ls), batch_size, T, "train", device="cpu", buffer_size=buffer)),
        "streamtok pack": iter(streamtok.loader(data, seq_len=T, batch_size=batch_size, split="all", epochs=None,
                                                documents="pack", block_docs=buffer, metrics=False)),
    }
    for it in its.values():
        for _ in range(batches):
            next(it)
    rates: dict[str, list[float]] = {name: [] for name in its}
    for _ in range(rounds):
        for name, it in its.items():
            t = time.perf_counter()
            for _ in range(batches):
                next(it)
            rates[name].append(batches * batch_size * T / (time.perf_counter() - t))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanochat", required=True, type=Path, help="a checkout of github.com/karpathy/nanochat")
    p.add_argument("--docs", type=int, default=30_000)
    p.add_argument("--buffer", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=40)
    args = p.parse_args()
    ls = lengths(args.docs, 600, 1.0, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="streamtok-nanochat-"))
    try:
        module = load_nanochat(args.nanochat.resolve(), write_parquet(tmp / "parquet", len(ls)))
        write_shards(tmp / "shards", ls)
        print(f"documents: {len(ls):,}, {int(ls.sum()):,} tokens, median {np.median(ls):.0f}, mean {ls.mean():.0f}, "
              f"p90 {np.percentile(ls, 90):.0f}, max {ls.max()}; buffer {args.buffer}")
        for T in (1024, 2048):
            n = nanochat_crop(module, ls, T, args.buffer)
            s = streamtok_crop(tmp / "shards", ls, T, args.buffer)
            print(f"T={T}: crop nanochat {n['crop']:.1%} (its epoch 2, {n['rows']:,} rows), streamtok pack "
                  f"{s['crop']:.1%} (whole epoch, {s['rows']:,} rows)")
            print(f"T={T}: documents not trained on in epoch 1: nanochat {n['left_docs']:,} "
                  f"({n['left_token_share']:.1%} of the tokens, median length {n['left_median']:.0f}, "
                  f"{n['left_longer_than_row']:,} longer than a row), still in its buffer; "
                  f"streamtok pack {s['left_docs']:,} (in blocks' dropped last rows)")
            rates = throughput(module, tmp / "shards", ls, T, args.buffer, args.batch_size, args.rounds, args.batches)
            print(f"T={T}: tokens/s (B={args.batch_size}, median of {args.rounds} interleaved rounds): "
                  + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in rates.items())
                  + f"; streamtok/nanochat {rates['streamtok pack'] / rates['nanochat']:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, shared with other jobs; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
