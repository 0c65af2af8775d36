"""The "blocks" read strategy: fixed-size blocks of remote shards in a bounded local cache.

A read of bytes ``[start, stop)`` of an object is served from the blocks that cover it, each
``block_bytes`` long (the last block of an object is shorter). A missing block is fetched
with one ranged GET, written under a temporary name and published by rename. Because the
loader's order is known in advance (a pure function of ``(seed, epoch, k)``), the loader
hands the cache its future reads (:meth:`BlockCache.plan`) and its clock
(:meth:`BlockCache.advance`); the cache then

- prefetches the next ``prefetch_blocks`` blocks the plan will need, in background threads;
- evicts by next use (Belady's rule: drop the block next needed furthest in the future), and
  admits a prefetched block only if it is needed sooner than what it would push out. An LRU
  re-downloads every block each epoch once the data outgrows the cache; this keeps the
  blocks that come back soonest.

The byte limit holds for the whole directory at every instant, downloads in progress
included, and the directory is shared by every process of the node that opens it: a block is
downloaded once per node, under a file lock, whatever the number of ranks and workers. Blocks
are named by the object's URL, ETag and size, so a restart re-uses them and a changed object
never reads an old block. A full disk (ENOSPC/EDQUOT) turns the cache off with one warning:
reads then go straight to the store and training continues.

Cost: one GET per block per node while it stays cached; disk = ``limit_bytes``; a read that
hits costs an ``open``/``pread``/``close`` of the block file.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

from ._blockcache import DEFAULT_BLOCK_BYTES, BlockCache, CacheCounters, RemoteObject, object_digest

__all__ = ["DEFAULT_BLOCK_BYTES", "DEFAULT_CACHE_LIMIT", "BlockCache", "BlockFetcher", "CacheCounters",
           "RemoteObject", "default_cache_dir", "object_digest"]

DEFAULT_CACHE_LIMIT = 16 << 30


def default_cache_dir() -> str:
    """``$STREAMTOK_CACHE_DIR/blocks``, else ``~/.cache/streamtok/blocks``: one per node by default."""
    root = os.environ.get("STREAMTOK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "streamtok")
    return os.path.join(root, "blocks")


def _block_bytes(store: Any) -> int:
    options = getattr(store, "options", None)
    return int(options.own("block_bytes")) if options is not None else DEFAULT_BLOCK_BYTES


class BlockFetcher:
    """``fetch="blocks"`` for a reader: the byte ranges of each step, served from a :class:`BlockCache`.

    The reader announces each coming step (``prefetch``, ``lookahead`` steps ahead, in the
    order the steps will be read) and then reads it (``read``). The announcements are the
    cache's plan: step ``j`` announced ``j``-th is position ``j`` on its clock, so the cache
    evicts what the coming steps need last and downloads, in the background, the blocks the
    next steps need first.

    Args:
        store: the client (``fetch_range(obj, start, stop)``, retries and ETag check included).
        objects: shard index -> object (``url``, ``size``, ``etag``) of the remote shards.
        cache_dir: the node's cache directory (default :func:`default_cache_dir`); every
            process and rank of the node that names the same one shares it.
        cache_limit: its size limit in bytes (default 16 GiB).
        block_bytes: the block size (default: the storage option ``block_bytes``, 8 MiB).
        prefetch_blocks: blocks fetched ahead of need per process.
    """

    def __init__(self, store: Any, objects: dict[int, RemoteObject], *, cache_dir: str | os.PathLike | None = None,
                 cache_limit: int | None = None, block_bytes: int | None = None, prefetch_blocks: int = 8):
        self.store = store
        self.objects = dict(objects)
        self.cache = BlockCache(
            default_cache_dir() if cache_dir is None else cache_dir,
            limit_bytes=DEFAULT_CACHE_LIMIT if cache_limit is None else int(cache_limit),
            block_bytes=_block_bytes(store) if block_bytes is None else int(block_bytes),
            fetch=self._fetch, prefetch_blocks=prefetch_blocks, threads=prefetch_blocks,
        )
        self.used_bytes = 0
        self._steps: dict[Hashable, int] = {}
        self._next = 0

    def _fetch(self, obj: RemoteObject, start: int, stop: int) -> bytes:
        return self.store.fetch_range(obj, start, stop)

    @property
    def fetched_bytes(self) -> int:
        """Bytes this process downloaded: blocks, and reads past the cache."""
        c = self.cache.counters
        return c.bytes_downloaded + c.bytes_direct

    def prefetch(self, key: Hashable, ranges: list[tuple[int, int, int]]) -> None:
        """Plan the step ``key``: its ranges ``(shard, start, stop)`` come after every step planned so far."""
        if key in self._steps:
            return
        pos = self._steps[key] = self._next
        self._next += 1
        while len(self._steps) > 4096:  # steps planned and never read (a pass cut short)
            del self._steps[next(iter(self._steps))]
        self.cache.extend((pos, self.objects[k], a, b) for k, a, b in ranges)

    def read(self, key: Hashable, ranges: list[tuple[int, int, int]]) -> list[bytes]:
        """The bytes of ``ranges``, exactly, in order (from the cache; downloaded now if missing)."""
        pos = self._steps.pop(key, None)
        if pos is not None:
            self.cache.advance(pos)
        out = [self.cache.read(self.objects[k], a, b) for k, a, b in ranges]
        self.used_bytes += sum(b - a for _, a, b in ranges)
        return out

    def discard(self) -> None:
        """Forget the steps planned and not read (the plan restarts with the next step announced)."""
        self._steps.clear()
