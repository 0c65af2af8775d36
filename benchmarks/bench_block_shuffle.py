"""What ``mode="block_shuffle"`` does to shuffle quality and to requests, against the exact shuffle.

For a dataset of ``--tokens`` tokens (windows of T+1 = 1025), over the first ``--batches``
batches of B = 32 windows of epoch 0, with 8 MiB blocks (4 Mi uint16 tokens):

- same block in a batch: the share of window pairs of one batch that come from one block
  (an exact shuffle: ~1/blocks; block_shuffle: ~1/64);
- distinct blocks per batch (of 32 windows);
- neighbour correlation: Pearson's r between the block index of window k and of window k+1
  in the order (0 for independent draws);
- block downloads per window: misses of a cache of ``--cache-blocks`` blocks evicting by next
  use (Belady, the future known), per window read; one GET each.

Pure computation, no I/O; a few seconds. Usage::

    python benchmarks/bench_block_shuffle.py [--tokens 100000000000] [--batches 2000]
"""

from __future__ import annotations

import argparse
import heapq
from collections import defaultdict

import numpy as np

from streamtok._order import WindowOrder

BLOCK_TOKENS = 1 << 22


def belady_misses(blocks: np.ndarray, capacity: int) -> int:
    """Misses of a cache of ``capacity`` blocks that evicts the block next used furthest ahead."""
    nxt = np.empty(len(blocks), dtype=np.int64)
    last: dict[int, int] = defaultdict(lambda: 1 << 62)
    for i in range(len(blocks) - 1, -1, -1):
        nxt[i] = last[int(blocks[i])]
        last[int(blocks[i])] = i
    cached: dict[int, int] = {}
    heap: list[tuple[int, int]] = []  # (-next use, block), stale entries skipped
    misses = 0
    for i, b in enumerate(blocks.tolist()):
        if b not in cached:
            misses += 1
            if len(cached) >= capacity:
                while True:
                    neg, victim = heapq.heappop(heap)
                    if cached.get(victim) == -neg:
                        del cached[victim]
                        break
        cached[b] = int(nxt[i])
        heapq.heappush(heap, (-int(nxt[i]), b))
    return misses


def measure(mode: str, n_tokens: int, batches: int, batch: int, cache_blocks: int) -> dict[str, float]:
    order = WindowOrder(mode, 0, 1024, n_tokens)
    starts = order.starts(0, np.arange(batches * batch))
    blocks = starts // BLOCK_TOKENS
    per_batch = blocks.reshape(batches, batch)
    same = np.mean([(np.sum(np.unique(b, return_counts=True)[1] ** 2) - batch) / (batch * (batch - 1)) for b in per_batch])
    distinct = np.mean([len(np.unique(b)) for b in per_batch])
    r = float(np.corrcoef(blocks[:-1], blocks[1:])[0, 1])
    misses = belady_misses(blocks, cache_blocks)
    return {"same": float(same), "distinct": float(distinct), "r": r, "downloads_per_window": misses / len(blocks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=100_000_000_000)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cache-blocks", type=int, default=128)
    args = ap.parse_args()
    print(f"{args.tokens:,} tokens ({args.tokens // BLOCK_TOKENS:,} blocks of 8 MiB), first {args.batches} batches of "
          f"{args.batch} windows, cache of {args.cache_blocks} blocks ({args.cache_blocks * 8} MiB)")
    print("| order | same block, pairs in a batch | distinct blocks per batch | neighbour r | block GETs per window |")
    print("|---|---|---|---|---|")
    for mode in ("shuffle", "block_shuffle"):
        m = measure(mode, args.tokens, args.batches, args.batch, args.cache_blocks)
        print(f"| {mode} | {m['same']:.5f} | {m['distinct']:.1f} | {m['r']:+.4f} | {m['downloads_per_window']:.4f} |")


if __name__ == "__main__":
    main()
