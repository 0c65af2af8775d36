"""Page-cache hints for a reader: ask the kernel for the pages of the next windows early.

The order of windows is known ahead, so the loader asks the kernel to read the pages of the
batches ``lookahead`` steps ahead (``MADV_WILLNEED``): a cold cache then reads ~10x faster
(benchmarks/RESULTS.md). While the data is cached the hints cost more than they save, so two
``mincore`` probes every few batches decide whether to send them.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import mmap
from typing import Any

import numpy as np

PAGE = mmap.PAGESIZE

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _mincore = _libc.mincore
    _mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
    _mincore.restype = ctypes.c_int
except (OSError, AttributeError):  # not Linux/BSD libc
    _mincore = None

_vec = (ctypes.c_ubyte * 1)()


def resident(address: int) -> bool | None:
    """Whether the page holding virtual ``address`` (inside a mapping) is cached; ``None``: unknown."""
    if _mincore is None:
        return None
    if _mincore(address - address % PAGE, PAGE, _vec) != 0:
        return None
    return bool(_vec[0] & 1)


_HINT_CALLS = 64  # batches hinted after a page-cache miss
_SKIP_CALLS = 8  # batches not hinted after both probes found their pages cached


class PageHints:
    """The hinting state of one reader in one process (whether the data looked cached)."""

    def __init__(self) -> None:
        self._hint_calls = 0  # > 0: batches left to hint; < 0: to skip; 0: probe the page cache

    def willneed(self, reader: Any, starts: np.ndarray, length: int) -> None:
        """Ask the kernel to read the pages of these windows ahead of use (``MADV_WILLNEED``).

        The windows' byte ranges are widened to whole pages, sorted, and merged where they
        touch or overlap, so a batch costs one ``madvise`` per run of pages: 1 for a
        sequential batch, at most ``len(starts)`` for random ones (~0.5 µs each when the
        pages are cached; on a cold cache each call queues its reads and returns, ~8 µs).
        """
        starts = np.asarray(starts, dtype=np.int64)
        if length <= 0 or len(starts) == 0 or self._cached(reader, starts):
            return
        lengths, data_offsets, itemsizes = reader.layout
        k, lo, _ = reader.file_positions(starts)
        n = np.minimum(length, lengths[k] - lo)
        short = n < length
        if short.any():  # windows stitched across shard ends: add the pieces past each end
            ks, los, ns = [k], [lo], [n]
            for kk, rest in zip((k[short] + 1).tolist(), (length - n[short]).tolist()):
                while rest > 0 and kk < len(reader.infos):
                    take = min(rest, int(lengths[kk]))
                    ks.append(np.array([kk])), los.append(np.array([0])), ns.append(np.array([take]))
                    rest, kk = rest - take, kk + 1
            k, lo, n = np.concatenate(ks), np.concatenate(los), np.concatenate(ns)
        # Byte ranges keyed by shard: shard k's bytes map to [k << 44, (k + 1) << 44).
        begin = data_offsets[k] + lo * itemsizes[k]
        end = begin + n * itemsizes[k] + (k << 44)
        begin = begin - begin % mmap.PAGESIZE + (k << 44)
        order = np.argsort(begin, kind="stable")
        kb, ke = begin[order], end[order]
        reach = np.maximum.accumulate(ke)
        first = np.flatnonzero(np.concatenate(([True], kb[1:] > reach[:-1])))
        last = np.concatenate((first[1:] - 1, [len(kb) - 1]))
        flag, maps = mmap.MADV_WILLNEED, {}
        for b, e in zip(kb[first].tolist(), reach[last].tolist()):
            shard = b >> 44
            mm = maps.get(shard)
            if mm is None:
                mm = maps[shard] = reader.mapping(shard)
            mm.madvise(flag, b - (shard << 44), e - b)

    def _cached(self, reader: Any, starts: np.ndarray) -> bool:
        """Whether hints can be skipped: the first and last window's pages were cached.

        Two ``mincore`` probes (~3 µs) every ``_SKIP_CALLS`` batches stand in for a batch of
        ``madvise`` calls (~15-40 µs) while the data is in the page cache. A miss turns the
        hints on for the next ``_HINT_CALLS`` batches (partly cached data misses often and
        stays hinted).
        """
        if self._hint_calls > 0:
            self._hint_calls -= 1
            return False
        if self._hint_calls < 0:
            self._hint_calls += 1
            return True
        for s in (int(starts[0]), int(starts[-1])):
            k = bisect.bisect_right(reader.offset_list, s) - 1  # the shard holding token s
            arr = reader.shard_array(k)
            if not resident(arr.__array_interface__["data"][0] + (s - reader.offset_list[k]) * arr.itemsize):
                self._hint_calls = _HINT_CALLS
                return False
        self._hint_calls = -_SKIP_CALLS
        return True
