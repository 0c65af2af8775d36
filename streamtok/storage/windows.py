"""The "windows" strategy: fetch exactly the bytes of the coming batches, before they are needed.

The loader knows the windows of every coming step (the order is a pure function of the seed,
epoch and step), and tells the reader ``lookahead`` steps ahead (``MemmapReader.willneed``).
For each step the fetcher turns the step's byte ranges into GET requests and starts them on
the storage loop at once; when the step is gathered, its bytes are usually there. Ranges of
one object are merged into one request only when the gap between them is small: at most
half of the smaller range and at most ``max_gap`` bytes, so the bytes fetched stay under
1.5x the bytes used (merging never more than doubles a range by its gap, and adjacent or
overlapping windows, as in sequential reading, merge for free). A merged request never
exceeds ``max_request`` bytes, so a long sequential read still goes out as many parallel
GETs. (obstore's own ``get_ranges`` merges any ranges within 1 MiB of each other: 1024
random 2 KiB windows of a 100 MB object became one GET of the whole object, hence this.)

Costs per epoch, exact global shuffle, ``W`` windows of ``T+1`` tokens: about ``W`` GET
requests (fewer where windows are adjacent), bytes fetched ≈ bytes used (1.0-1.5x), no
local disk; memory: the bytes of ``lookahead`` steps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from .refs import ObjectRef
from .store import RemoteStore

Range = tuple[int, int, int]  # (shard, byte start, byte stop)


def coalesce(ranges: Sequence[Range], *, max_gap: int, max_request: int) -> tuple[list[Range], list[tuple[int, int]]]:
    """Merge the ranges worth one request each: ``(requests, where)``, ``where[i]`` being the
    request that holds ``ranges[i]`` and the offset of its first byte there."""
    order = sorted(range(len(ranges)), key=lambda i: (ranges[i][0], ranges[i][1]))
    requests: list[list[int]] = []
    where: list[tuple[int, int]] = [(0, 0)] * len(ranges)
    for i in order:
        k, a, b = ranges[i]
        if requests:
            rk, ra, rb = requests[-1]
            gap = a - rb
            small = min(b - a, rb - ra)
            if rk == k and gap <= min(max_gap, small // 2) and max(rb, b) - ra <= max_request:
                requests[-1][2] = max(rb, b)
                where[i] = (len(requests) - 1, a - ra)
                continue
        requests.append([k, a, b])
        where[i] = (len(requests) - 1, 0)
    return [tuple(r) for r in requests], where  # type: ignore[misc]


class WindowFetcher:
    """Fetches the byte ranges of coming steps ahead of need, with no local disk.

    Args:
        store: the client.
        objects: shard index -> object, for the remote shards.
        max_gap: the largest gap (bytes) merged into one request.
        max_request: the largest merged request (bytes).
        keep: steps whose fetches are held before the oldest unread ones are dropped (a
            pass that ends early leaves no bytes behind).
    """

    def __init__(self, store: RemoteStore, objects: Mapping[int, ObjectRef], *, max_gap: int = 1 << 16,
                 max_request: int = 8 << 20, keep: int = 512):
        self.store = store
        self.objects = dict(objects)
        self.max_gap = max_gap
        self.max_request = max_request
        self.keep = keep
        self.used_bytes = 0
        self.fetched_bytes = 0
        self._pending: OrderedDict[Hashable, concurrent.futures.Future] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pending"] = OrderedDict()
        return state

    async def _fetch(self, ranges: Sequence[Range]) -> list[memoryview]:
        requests, where = coalesce(ranges, max_gap=self.max_gap, max_request=self.max_request)
        self.fetched_bytes += sum(b - a for _, a, b in requests)
        self.used_bytes += sum(b - a for _, a, b in ranges)
        bodies = await asyncio.gather(*(self.store.fetch_range_async(self.objects[k], a, b) for k, a, b in requests))
        return [bodies[r][off : off + (b - a)] for (r, off), (_, a, b) in zip(where, ranges)]

    def prefetch(self, key: Hashable, ranges: Sequence[Range]) -> None:
        """Start fetching ``ranges`` (of remote shards) for the step called ``key``."""
        if key in self._pending or not ranges:
            return
        self._pending[key] = self.store.submit(self._fetch(list(ranges)))
        while len(self._pending) > self.keep:
            _, old = self._pending.popitem(last=False)
            old.cancel()

    def read(self, key: Hashable, ranges: Sequence[Range]) -> list[memoryview]:
        """The bytes of ``ranges``, exactly, in order (fetched now if not prefetched).

        Raises:
            RemoteReadError, ObjectChangedError: see :meth:`RemoteStore.fetch_range_async`.
        """
        future = self._pending.pop(key, None)
        if future is None:
            if not ranges:
                return []
            future = self.store.submit(self._fetch(list(ranges)))
        return future.result()

    def discard(self) -> None:
        """Drop every fetch not read yet."""
        while self._pending:
            self._pending.popitem()[1].cancel()
