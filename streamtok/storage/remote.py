"""RemoteShards: the remote side of one reader: its objects, their layouts, and the fetcher.

The reader (:class:`streamtok.MemmapReader`) keeps its arithmetic (offsets, ``locate``,
stitching across shard ends) and asks this object for bytes: ``gather`` cuts each window
into ``(shard, byte range)`` pieces, asks the fetcher for the remote pieces (prefetched by
``willneed`` when the loader looks ahead) and copies them into the batch; pieces of local
shards are copied from their memory maps as before. Nothing above the reader knows where
the bytes came from.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._formats import ShardInfo, probe_shard
from ..errors import ConfigError
from . import metacache, urls
from .options import StorageOptions
from .probe import Probed, probe_remote
from .refs import ObjectRef
from .store import RemoteStore
from .windows import Range, WindowFetcher

FETCH_STRATEGIES = ("windows", "blocks")


def make_fetcher(fetch: str, store: RemoteStore, objects: Mapping[int, ObjectRef], *,
                 cache_dir: str | None, cache_limit: int | None) -> Any:
    """The fetcher of a strategy: ``"windows"`` (:class:`WindowFetcher`) or ``"blocks"``
    (``streamtok.storage.blocks.BlockFetcher``, a bounded local block cache).

    Raises:
        ConfigError: an unknown strategy, or cache options without ``fetch="blocks"``.
    """
    if fetch not in FETCH_STRATEGIES:
        raise ConfigError(f"fetch must be one of {FETCH_STRATEGIES}, not {fetch!r}")
    if fetch == "windows":
        if cache_dir is not None or cache_limit is not None:
            raise ConfigError("cache_dir= and cache_limit= are options of fetch='blocks' (the 'windows' strategy uses no local disk)")
        return WindowFetcher(store, objects)
    try:  # the blocks strategy's module (streamtok/storage/blocks.py), found by name
        blocks = importlib.import_module(f"{__package__}.blocks")
    except ModuleNotFoundError:
        raise ConfigError("fetch='blocks' is not available in this build of streamtok; use fetch='windows'") from None
    return blocks.BlockFetcher(store, objects, cache_dir=cache_dir, cache_limit=cache_limit)


_OPENED: dict[tuple[str, int, str, str], Probed] = {}  # (url, size, etag, raw dtype) -> what opening it found


def forget_opened() -> None:
    """Forget the shards opened in this process (the next reader probes them again, or reads the
    metadata cache): for benchmarks of a cold open."""
    _OPENED.clear()


def _memo_key(ref: ObjectRef | None, raw_dtype: np.dtype) -> tuple[str, int, str, str] | None:
    """Only an object with an ETag is remembered: its size and ETag name one version."""
    return None if ref is None or not ref.etag else (ref.url, ref.size, ref.etag, np.dtype(raw_dtype).str)


class RemoteArray:
    """The tokens of one remote shard, sliced like an array: each slice is a ranged read."""

    def __init__(self, shards: RemoteShards, k: int):
        self._shards, self._k = shards, k
        info = shards.infos[k]
        self.dtype, self.shape = info.dtype, (info.n_tokens,)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                raise IndexError("remote shard slices take no step")
            return self._shards.read_tokens(self._k, start, max(start, stop))
        i = index + self.shape[0] if index < 0 else index
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"token {index} is outside [0, {self.shape[0]})")
        return self._shards.read_tokens(self._k, i, i + 1)[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class RemoteShards:
    """The shards of one reader where some or all are objects in a store.

    Args:
        paths: every shard's path or URL, in order.
        known: objects a listing already described (no HEAD needed).
        options: storage options.
        raw_dtype: the dtype of headerless shards.
        fetch, cache_dir, cache_limit: the read strategy and its cache (see :func:`make_fetcher`).
    """

    def __init__(self, paths: Sequence[str], known: Mapping[str, ObjectRef | None], options: StorageOptions, *,
                 raw_dtype: np.dtype, fetch: str = "windows", cache_dir: str | None = None, cache_limit: int | None = None):
        self.store = RemoteStore(options)
        self.known: dict[str, ObjectRef | None] = dict(known)  # what listings saw (None: known to be absent)
        remote = [p for p in paths if urls.is_remote(p)]
        cache = metacache.MetaCache.for_urls(remote, raw_dtype) if options.own("metadata_cache") else None
        probed: dict[str, Probed] = {}
        if remote:
            refs = dict(known)
            # Objects no listing described: a HEAD only for those that may need no read (an entry
            # in the metadata cache, or opened already in this process), to check their ETag and
            # size; the others' first GET tells both (see .probe).
            opened = {key[0] for key in _OPENED}
            check = [u for u in remote if refs.get(u) is None and ((cache is not None and cache.has(u)) or u in opened)]
            refs.update({r.url: r for r in self.store.head_many(check)})
            hits = cache.lookup(refs, remote) if cache is not None else {}
            # Opened already in this process (a mixture opens each source, then all together).
            hits.update({u: _OPENED[key] for u in remote if u not in hits and (key := _memo_key(refs.get(u), raw_dtype)) in _OPENED})
            todo = [u for u in remote if u not in hits]
            probed = {**hits, **{p.ref.url: p for p in probe_remote(self.store, todo, refs, raw_dtype)}}
            if cache is not None and todo:
                cache.store([probed[u] for u in remote])
            for u in todo:
                key = _memo_key(probed[u].ref, raw_dtype)
                if key is not None:
                    _OPENED[key] = probed[u]
        self.infos: tuple[ShardInfo, ...] = tuple(
            probed[p].info if p in probed else probe_shard(p, raw_dtype=raw_dtype) for p in paths
        )
        self.objects: dict[int, ObjectRef] = {k: probed[p].ref for k, p in enumerate(paths) if p in probed}
        self.samples: dict[int, bytes] = {k: probed[p].sample for k, p in enumerate(paths) if p in probed}
        self.index_objects: dict[int, ObjectRef] = {
            k: probed[p].index for k, p in enumerate(paths) if p in probed and probed[p].index is not None  # type: ignore[misc]
        }
        self.fetch = fetch
        self.net_wait_ns = 0
        self.fetcher = make_fetcher(fetch, self.store, self.objects, cache_dir=cache_dir, cache_limit=cache_limit)

    def net_totals(self) -> tuple[int, ...]:
        """This process's ``streamtok.metrics.layout.NET_FIELDS``: requests, bytes, retries, in flight,
        time blocked on the store, cache hits and cache bytes (the last two: ``fetch="blocks"``)."""
        c = self.store.counters
        cache = getattr(self.fetcher, "cache", None)
        hits = cache.counters.hits if cache is not None else 0
        held = cache.dir.last_usage if cache is not None else 0
        return (c.requests, c.bytes, c.retries, c.in_flight, self.net_wait_ns, hits, held)

    def stats(self) -> dict[str, int]:
        """This process's network counters (for metrics): requests, bytes, retries, requests in
        flight, failures past the retry bound, and the fetcher's bytes fetched and bytes used."""
        c = self.store.counters
        return {"requests": c.requests, "bytes": c.bytes, "retries": c.retries, "in_flight": c.in_flight,
                "failures": c.failures, "fetched_bytes": int(getattr(self.fetcher, "fetched_bytes", 0)),
                "used_bytes": int(getattr(self.fetcher, "used_bytes", 0))}

    def is_remote(self, k: int) -> bool:
        return k in self.objects

    def index_of(self, url: str) -> int | None:
        """The shard index of the remote shard at ``url`` (its first, if listed twice), or ``None``."""
        if not hasattr(self, "_by_url"):
            self._by_url: dict[str, int] = {}
            for k in sorted(self.objects, reverse=True):
                self._by_url[self.objects[k].url] = k
        return self._by_url.get(url)

    def array(self, k: int) -> RemoteArray:
        return RemoteArray(self, k)

    def read_tokens(self, k: int, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of remote shard ``k``, as a new array (one ranged read)."""
        info = self.infos[k]
        size = info.dtype.itemsize
        a, b = info.offset + start * size, info.offset + stop * size
        data = self.fetcher.read(("tokens", k, a, b), [(k, a, b)])[0] if stop > start else b""
        return np.frombuffer(data, dtype=info.dtype).copy()

    def pieces(self, reader: Any, starts: np.ndarray, length: int | np.ndarray) -> list[tuple[int, int, int, int, int]]:
        """``(row, column, shard, first token, tokens)`` for each piece of each window
        (``length``: one for all windows, or one per window)."""
        offs = reader.offset_list
        lengths = [length] * len(starts) if isinstance(length, int) else np.asarray(length).tolist()
        out = []
        for row, (s, k, length) in enumerate(zip(starts.tolist(), reader.locate(starts).tolist(), lengths)):
            lo, col = s - offs[k], 0
            while col < length:  # stitched across shard ends, as the local gather does
                n = min(length - col, offs[k + 1] - offs[k] - lo)
                out.append((row, col, k, lo, n))
                col += n
                k, lo = k + 1, 0
        return out

    def _ranges(self, pieces: Sequence[tuple[int, int, int, int, int]]) -> list[Range]:
        ranges = []
        for _, _, k, lo, n in pieces:
            if k in self.objects:
                info = self.infos[k]
                a = info.offset + lo * info.dtype.itemsize
                ranges.append((k, a, a + n * info.dtype.itemsize))
        return ranges

    @staticmethod
    def _key(starts: np.ndarray, length: int) -> tuple[bytes, int]:
        return (np.ascontiguousarray(starts, dtype=np.int64).tobytes(), length)

    def willneed(self, reader: Any, starts: np.ndarray, length: int) -> None:
        """Start fetching the remote bytes of these windows (a coming step)."""
        self.fetcher.prefetch(self._key(starts, length), self._ranges(self.pieces(reader, starts, length)))

    def _spans_key(self, starts: np.ndarray, lengths: np.ndarray) -> tuple[str, tuple[bytes, int], bytes]:
        return ("spans", self._key(starts, 0), np.ascontiguousarray(lengths, dtype=np.int64).tobytes())

    def willneed_spans(self, reader: Any, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Start fetching the remote bytes of these pieces (a coming step of ``documents="pack"``)."""
        self.fetcher.prefetch(self._spans_key(starts, lengths), self._ranges(self.pieces(reader, starts, lengths)))

    def gather(self, reader: Any, starts: np.ndarray, length: int, out: np.ndarray) -> np.ndarray:
        """Copy ``tokens[s:s+length]`` for each start into the rows of ``out`` (see ``MemmapReader.gather``)."""
        pieces = self.pieces(reader, starts, length)
        ranges = self._ranges(pieces)
        t0 = time.perf_counter_ns()
        bodies = iter(self.fetcher.read(self._key(starts, length), ranges))
        self.net_wait_ns += time.perf_counter_ns() - t0
        for row, col, k, lo, n in pieces:
            if k in self.objects:
                out[row, col : col + n] = np.frombuffer(next(bodies), dtype=self.infos[k].dtype)
            else:  # a local shard beside remote ones: read and checked as the reader reads it
                reader.read_files(np.array([reader.offset_list[k] + lo]), (n,), out[row, col : col + n])
        return out

    def read_spans(self, reader: Any, starts: np.ndarray, lengths: np.ndarray, dtype: np.dtype) -> list[np.ndarray]:
        """Tokens ``[s, s+n)`` for each start and length, all fetched at once, or taken from
        :meth:`willneed_spans` (``documents="pack"``)."""
        pieces = self.pieces(reader, starts, lengths)
        t0 = time.perf_counter_ns()
        bodies = iter(self.fetcher.read(self._spans_key(starts, lengths), self._ranges(pieces)))
        self.net_wait_ns += time.perf_counter_ns() - t0
        out = [np.empty(int(n), dtype=dtype) for n in np.asarray(lengths).tolist()]
        for row, col, k, lo, n in pieces:
            if k in self.objects:
                out[row][col : col + n] = np.frombuffer(next(bodies), dtype=self.infos[k].dtype)
            else:
                reader.read_files(np.array([reader.offset_list[k] + lo]), (n,), out[row][col : col + n])
        return out
