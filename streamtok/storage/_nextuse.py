"""When each block is next needed: the plan a block cache evicts and prefetches by.

The loader knows its future reads (the order is a pure function of ``(seed, epoch, k)``) and
tells the cache, step by step, ahead of time: ``add(position, block)`` with positions that
never decrease (the loader's clock: the order in which steps will be read). Then
``next_use(block, now)`` is the block's first planned position at or after ``now`` and
``upcoming(now, n)`` lists the next ``n`` distinct blocks in order of first use. Uses before
``now`` are dropped as the clock moves, so every operation is O(1) amortised and memory is
one entry per planned use (a horizon of 512 steps of 32 windows: 16k entries).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable

INFINITY = math.inf


class NextUse:
    """A plan of future block uses, queried for next use and for the blocks to fetch ahead."""

    def __init__(self) -> None:
        self._uses: deque[tuple[int, Hashable]] = deque()
        self._by_block: dict[Hashable, deque[int]] = {}
        self._runs: deque[tuple[int, Hashable]] = deque()  # consecutive uses of one block kept once
        self.end = 0

    def add(self, position: int, block: Hashable) -> None:
        """Plan a use of ``block`` at ``position`` (not before any position already planned)."""
        self._uses.append((position, block))
        self._by_block.setdefault(block, deque()).append(position)
        if not self._runs or self._runs[-1][1] != block:
            self._runs.append((position, block))
        self.end = max(self.end, position + 1)

    def trim(self, now: int) -> None:
        """Forget the uses before ``now``."""
        while self._uses and self._uses[0][0] < now:
            _, block = self._uses.popleft()
            positions = self._by_block[block]
            positions.popleft()
            if not positions:
                del self._by_block[block]
        while self._runs and self._runs[0][0] < now:
            self._runs.popleft()

    def next_use(self, block: Hashable, now: int) -> float:
        """The first planned position at or after ``now`` that reads ``block``; infinity if none."""
        for p in self._by_block.get(block, ()):
            if p >= now:
                return p
        return INFINITY

    def upcoming(self, now: int, n: int) -> list[tuple[int, Hashable]]:
        """The next ``n`` distinct blocks used at or after ``now``, with their first position."""
        self.trim(now)
        out: list[tuple[int, Hashable]] = []
        seen: set[Hashable] = set()
        for i, (p, b) in enumerate(self._runs):
            if len(out) >= n or i > 64 * n + 1024:  # bounded work when few blocks interleave
                break
            if b not in seen:
                seen.add(b)
                out.append((p, b))
        return out
