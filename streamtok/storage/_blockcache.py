"""BlockCache: a node-wide, size-bounded cache of fixed-size blocks of remote objects.

The mechanism behind ``fetch="blocks"`` (:mod:`streamtok.storage.blocks` has the strategy
and its costs): reads are served from block files in a shared directory
(:mod:`._cachedir`: names, locks, the byte limit, eviction), missing blocks are downloaded
once per node, and the plan of future reads (:mod:`._nextuse`) decides what is prefetched
and what is evicted (the block the node needs furthest in the future).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError
from ._cachedir import BlockName, CacheDir, is_disk_full
from ._nextuse import INFINITY, NextUse

DEFAULT_BLOCK_BYTES = 8 << 20
PUBLISH_EVERY = 8  # steps between two publications of a process's plan to the node


class RemoteObject(Protocol):
    """What the cache needs of an object: where it is and which version it is."""

    url: str
    size: int
    etag: str


Fetch = Callable[[Any, int, int], bytes]


@dataclass
class CacheCounters:
    """What this process's cache did: blocks hit and downloaded, bytes, evictions seen as misses."""

    hits: int = 0
    downloads: int = 0
    bytes_downloaded: int = 0
    direct_reads: int = 0
    bytes_direct: int = 0
    waits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **delta: int) -> None:
        with self._lock:
            for k, v in delta.items():
                setattr(self, k, getattr(self, k) + v)


def object_digest(obj: RemoteObject) -> str:
    """A short name for one version of an object: its URL, ETag and size."""
    return hashlib.sha256(f"{obj.url}\0{obj.etag}\0{obj.size}".encode()).hexdigest()[:32]


class BlockCache:
    """A node-wide, size-bounded cache of fixed-size blocks of remote objects, evicting by next use.

    Args:
        cache_dir: the directory; processes that open the same one share it.
        limit_bytes: the most bytes the directory holds (blocks and downloads in progress).
        block_bytes: the block size (MiB to tens of MiB: one GET each).
        fetch: ``fetch(obj, start, stop) -> bytes``, one ranged read with its own retries.
        prefetch_blocks: how many upcoming blocks to fetch ahead of need.
        threads: concurrent prefetch downloads per process.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        limit_bytes: int,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        fetch: Fetch,
        prefetch_blocks: int = 4,
        threads: int = 4,
    ):
        if block_bytes < 1:
            raise ConfigError(f"block_bytes must be positive, got {block_bytes}")
        if limit_bytes < block_bytes:
            raise ConfigError(
                f"cache_limit={limit_bytes} bytes is smaller than one block ({block_bytes} bytes) "
                f"in {os.fspath(cache_dir)!r}: raise it or use smaller blocks"
            )
        self.dir = CacheDir(cache_dir, limit_bytes)
        self.block_bytes = int(block_bytes)
        self.fetch = fetch
        self.prefetch_blocks = int(prefetch_blocks)
        self.threads = int(threads)
        self.counters = CacheCounters()
        self.enabled = True
        self._plan = NextUse()
        self._objects: dict[str, RemoteObject] = {}
        self._now = 0
        self._advances = 0
        self._init_process()

    def _init_process(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._inflight: dict[BlockName, Future] = {}
        self._last_admit: threading.Event | None = None
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_inflight", "_pool", "counters", "_last_admit"):
            del state[k]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.counters = CacheCounters()
        self._init_process()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: threads and in-flight downloads stayed behind
            self._init_process()
            self.counters = CacheCounters()

    # names -------------------------------------------------------------------------------
    def block_name(self, obj: RemoteObject, index: int) -> BlockName:
        """The block ``index`` of ``obj``: its name carries the byte count of that block."""
        start = index * self.block_bytes
        nbytes = min(obj.size, start + self.block_bytes) - start
        return BlockName(object_digest(obj), self.block_bytes, index, nbytes)

    def blocks_of(self, obj: RemoteObject, start: int, stop: int) -> range:
        """The indices of the blocks that hold bytes ``[start, stop)`` of ``obj``."""
        if stop <= start:
            return range(0)
        return range(start // self.block_bytes, (stop - 1) // self.block_bytes + 1)

    # the plan ----------------------------------------------------------------------------
    def plan(self, uses: Iterable[tuple[int, RemoteObject, int, int]]) -> None:
        """Replace the plan with future reads ``(position, obj, start, stop)`` on the loader's clock."""
        self._plan = NextUse()
        self.extend(uses)

    def extend(self, uses: Iterable[tuple[int, RemoteObject, int, int]]) -> None:
        """Add future reads ``(position, obj, start, stop)``, positions not before those planned."""
        for pos, obj, start, stop in uses:
            digest = object_digest(obj)
            self._objects[digest] = obj
            for i in self.blocks_of(obj, start, stop):
                self._plan.add(pos, (digest, i))
        self._pump()

    def advance(self, now: int) -> None:
        """Move the clock to ``now`` (the position about to be read) and prefetch ahead of it."""
        self._now = int(now)
        self._plan.trim(self._now)
        self._publish()
        self._pump()

    def _own_plan(self) -> list[str]:
        """The blocks this process needs next, soonest first (as many as the cache holds, and the prefetch)."""
        n = min(4096, self.dir.limit_bytes // self.block_bytes + self.prefetch_blocks)
        return [str(self.block_name(self._objects[d], i)) for _, (d, i) in self._plan.upcoming(self._now, n)]

    def _publish(self) -> None:
        """Tell the node's other processes what this one needs next (every few steps)."""
        self._advances += 1
        if self._advances % PUBLISH_EVERY == 1 and self.enabled:
            try:
                self.dir.write_plan(self._own_plan())
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self._disable(exc)

    def ranks(self) -> Callable[[str], float]:
        """Block name -> how soon the node needs it (0: first; infinity: not planned by any process)."""
        ranks: dict[str, float] = {n: float(r) for n, r in self.dir.read_plans().items()}
        for i, name in enumerate(self._own_plan()):
            if i < ranks.get(name, INFINITY):
                ranks[name] = float(i)
        return lambda name: ranks.get(name, INFINITY)

    # reading -----------------------------------------------------------------------------
    def read(self, obj: RemoteObject, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of ``obj``, from cached blocks, downloading the missing ones."""
        self._check_pid()
        if not self.enabled:
            return self._direct(obj, start, stop)
        parts = []
        for index in self.blocks_of(obj, start, stop):
            base = index * self.block_bytes
            lo, hi = max(start, base) - base, min(stop, base + self.block_bytes) - base
            parts.append(self._read_block(obj, index, lo, hi))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_block(self, obj: RemoteObject, index: int, lo: int, hi: int) -> bytes:
        name = self.block_name(obj, index)
        data = self._pread(name, lo, hi)
        if data is not None:
            self.counters.add(hits=1)
            return data
        with self._lock:
            pending = self._inflight.get(name)
        if pending is not None:
            self.counters.add(waits=1)
            pending.result()
            data = self._pread(name, lo, hi)
            if data is not None:
                return data
        block = self._load(obj, name, use=-INFINITY)
        if block is not None:
            return bytes(block[lo:hi])
        data = self._pread(name, lo, hi)
        if data is None:  # evicted between download and read, or the cache is off
            return self._direct(obj, index * self.block_bytes + lo, index * self.block_bytes + hi)
        return data

    def _direct(self, obj: RemoteObject, start: int, stop: int) -> bytes:
        """Bytes read past the cache (it is off, or full of blocks needed sooner)."""
        data = self.fetch(obj, start, stop)
        self.counters.add(direct_reads=1, bytes_direct=len(data))
        return data

    def _pread(self, name: BlockName, lo: int, hi: int) -> bytes | None:
        try:
            fd = os.open(self.dir.block_path(name), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size != name.nbytes:  # never trust a file: a wrong size is refetched
                os.unlink(self.dir.block_path(name))
                return None
            data = os.pread(fd, hi - lo, lo)
        finally:
            os.close(fd)
        return data if len(data) == hi - lo else None

    def _load(self, obj: RemoteObject, name: BlockName, use: float, admitted: threading.Event | None = None) -> bytes | None:
        """Download ``name`` into the cache unless another process did; the bytes if this call fetched them.

        ``use`` is how soon the block is needed (its rank among the blocks this process needs
        next; -inf: now); it is admitted only by evicting blocks the node needs later. A block that cannot be admitted is fetched and returned
        uncached when needed now, and skipped when it was a prefetch. ``admitted`` is set once
        the block is in, reserved or refused (the next prefetch may then reserve).
        """
        with self.dir.block_lock(name):
            if os.path.exists(self.dir.block_path(name)):
                return None
            start = name.index * self.block_bytes
            try:
                reserved = self.enabled and self.dir.reserve(name, self.ranks(), use)
            except OSError as exc:  # no room even for an empty reservation file
                if not is_disk_full(exc):
                    raise
                self._disable(exc)
                reserved = False
            if admitted is not None:
                admitted.set()
            if not reserved:
                if use != -INFINITY:
                    return None
                return self._direct(obj, start, start + name.nbytes)
            try:
                data = self.fetch(obj, start, start + name.nbytes)
            except BaseException:
                self.dir.release(name)
                raise
            self.counters.add(downloads=1, bytes_downloaded=len(data))
            try:
                self.dir.write(name, data)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self._disable(exc)
            return data

    def _disable(self, exc: OSError) -> None:
        if self.enabled:
            self.enabled = False
            warnings.warn(
                f"block cache {self.dir.path!r}: the disk is full ({exc.strerror}); "
                "reading without the cache from now on",
                RuntimeWarning,
                stacklevel=4,
            )

    # prefetch ----------------------------------------------------------------------------
    def _pump(self) -> None:
        if not self.enabled or self.prefetch_blocks < 1:
            return
        self._check_pid()
        for rank, (_, (digest, index)) in enumerate(self._plan.upcoming(self._now, self.prefetch_blocks)):
            obj = self._objects[digest]
            name = self.block_name(obj, index)
            with self._lock:
                if name in self._inflight or os.path.exists(self.dir.block_path(name)):
                    continue
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="streamtok-blocks")
                # Prefetches reserve space in order of need: a block needed later never takes
                # the room of one needed sooner whose download has not reserved yet.
                before, self._last_admit = self._last_admit, threading.Event()
                fut = self._pool.submit(self._prefetch, obj, name, rank, before, self._last_admit)
                self._inflight[name] = fut
            fut.add_done_callback(lambda f, n=name: self._done(n))

    def _prefetch(self, obj: RemoteObject, name: BlockName, rank: int,
                  before: threading.Event | None, admitted: threading.Event) -> None:
        try:
            if before is not None:
                before.wait(timeout=60)  # bounded: a stuck download delays, never blocks, the next
            self._load(obj, name, use=rank, admitted=admitted)
        except Exception:  # a failed prefetch is retried by the read that needs the block
            pass
        finally:
            admitted.set()

    def _done(self, name: BlockName) -> None:
        with self._lock:
            self._inflight.pop(name, None)

    def usage(self) -> int:
        """Bytes the node's cache directory holds now (all processes)."""
        return self.dir.usage()

    def close(self) -> None:
        """Wait for prefetches in flight and stop the threads."""
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=True)
            self._pool = None
