"""What the training loop and the workers count, at a few operations per batch.

:class:`Meter` wraps the batches the training loop iterates (the loader's, or a background
prefetcher's) and times a sample of its waits; :func:`counting_gather` counts a worker's
batches. Both store into their own slot (see :mod:`._stats`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ._stats import SlotWriter, SourceRows

class Meter:
    """The trainer's side: iterates the loop's batches, timing the training loop's wait.

    A batch's wait is all the time the loop spends inside ``next()``: from the moment it
    asks for a batch until it holds it, the split into ``(x, y)`` and the first batch's
    worker start included (with workers, mostly the queue wait; without, the gather itself).
    Clock reads are what cost here (in a VM, cold after each batch's 64 KiB of copying), so
    only every ``k``-th batch is timed and stands for ``k`` batches; ``k`` adapts so that
    timed batches come about every 1-4 ms: every batch when the loop is slow (a real model),
    1 in 16-64 when the loader runs flat out. Totals are stored into the slot at most every
    ``PUBLISH_NS`` (5 ms) and at the end of the pass; ``batches`` has advanced the position
    past each batch before handing it out, so position and count always match. At its
    first batch (or its end, if empty) a pass stores where it began, with the pass count.
    Per untimed batch: one generator step, a test and an add. The same class meters a
    background prefetcher's iterator for the training loop (see :class:`Consumed`). A
    mixture's per-source counts (``sources``) are asked for only when the totals are stored,
    so they are those of the same position.

    Args:
        batches: the batches as the loop receives them.
        slot: the slot to write.
        sampler: ``batch_size``, ``seq_len`` and the position ``epoch``, ``offset``.
        start: where the pass began (``epoch``, ``offset``), asked at its first batch;
            default: the position when iteration starts.
        sources: a mixture's per-source counts at the position (see :class:`SourceRows`).
    """

    PUBLISH_NS = 5_000_000
    MAX_STRIDE = 64

    def __init__(
        self, batches: Iterator[Any], slot: SlotWriter, sampler: Any, *, start: Callable[[], Any] | None = None,
        sources: Callable[[], SourceRows] | None = None,
    ):
        self.batches, self.slot, self.sampler, self.start = batches, slot, sampler, start
        self.sources = sources

    def _begin(self, entry: tuple[int, int]) -> None:
        where = self.start() if self.start is not None else None
        self.slot.new_pass(*((where.epoch, where.offset) if where is not None else entry))

    def __iter__(self) -> Iterator[Any]:
        clock, slot, s, mix = time.perf_counter_ns, self.slot, self.sampler, self.sources
        tokens = s.batch_size * s.seq_len
        # Totals continue from earlier passes in this process (the slot is claimed once).
        n, wait, tokens0, n0 = slot.batches, slot.wait_ns, slot.tokens, slot.batches
        entry, begun = (s.epoch, s.offset), False
        slot.set_iterating(True)
        stride, timed_at = 1, n  # time batch number n + 1 (the first), then every `stride`
        t0 = last = clock()
        due = t0 + self.PUBLISH_NS
        try:
            for buf in self.batches:
                if t0:
                    t1 = clock()
                    # Stands for `stride` batches, but they cannot have waited longer than
                    # they took (a timed batch that was preempted must not count 64 times).
                    wait += min((t1 - t0) * stride, t1 - last)
                    if t1 - last < 1_000_000 and stride < self.MAX_STRIDE:
                        stride *= 2
                    elif t1 - last > 4_000_000 and stride > 1:
                        stride //= 2
                    last, t0 = t1, 0
                    if not begun:
                        begun = True
                        self._begin(entry)
                    n += 1
                    if t1 >= due:
                        due = t1 + self.PUBLISH_NS
                        slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset, mix and mix())
                else:
                    n += 1
                yield buf
                if n - timed_at >= stride:
                    timed_at, t0 = n, clock()
            if t0:  # the call that ended the pass (with workers: their shutdown), when timed
                wait += clock() - t0
        finally:  # end of the pass, or left early (break, exception, close)
            if not begun:
                self._begin(entry)
            slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset, mix and mix())
            slot.set_iterating(False)


class Consumed:
    """The position a consumer :class:`Meter` publishes: that of the training loop.

    ``CUDAPrefetcher(background=True)`` iterates the loader on its own thread, so the
    loader's :class:`Meter` (slot 0) times that thread's wait for the DataLoader, and its
    count and position run ahead of the loop by the batches in flight. A second Meter,
    around the prefetcher's iterator in the training loop's thread, writes the consumer
    slot: the loop's wait inside ``next()``, the batches it took, and their position, from
    ``state()`` (the prefetcher's state as of the last batch handed out). It samples as the
    loader's Meter does, so it costs the loop the same per batch (a generator step, a test
    and an add), small next to the queue get it times; the position is read only when the
    totals are stored (at most every 5 ms). So are a mixture's per-source counts: those of
    the batches the loop took, read from the same state.

    Args:
        batch_size: rows per batch ``B``.
        seq_len: tokens per row ``T`` (a batch counts ``B * T`` tokens, as the loader's).
        state: the loader state as of the last batch the loop took.
        mixture: the loader's mixture sampler (its ``names`` and ``report_at``), if any.
    """

    def __init__(self, batch_size: int, seq_len: int, state: Callable[[], dict[str, Any]], mixture: Any = None):
        self.batch_size, self.seq_len, self._state = batch_size, seq_len, state
        self.mixture = mixture

    def sources(self) -> SourceRows:
        """The mixture's per-source counts as of the last batch the loop took."""
        s = self._state()["sampler"]
        windows = int(s["windows"])
        counts = [int(s["sources"][n]["windows"]) for n in self.mixture.names]
        return source_rows(self.mixture.report_at(windows, counts), int(s["step"]), windows)

    @property
    def epoch(self) -> int:
        return int(self._state()["sampler"]["epoch"])

    @property
    def offset(self) -> int:
        return int(self._state()["sampler"]["offset"])


def source_rows(report: list[dict[str, Any]], step: int, windows: int) -> SourceRows:
    """A mixture report (see ``MixtureSampler.report``) at global ``step`` as the words a slot stores."""
    return step, windows, [(r["windows"], r["tokens"], r["target"], float(r["weight"])) for r in report]


def mixture_sources(mixture: Any) -> Callable[[], SourceRows]:
    """The per-source counts of ``mixture`` (a ``MixtureSampler``) at its current position."""
    return lambda: source_rows(mixture.report(), mixture.step, mixture.windows)


def counting_gather(gather: Callable[..., Any], slot: SlotWriter, *, tokens: int) -> Callable[..., Any]:
    """Wrap a worker's ``collator.gather`` so that its slot counts the batches it builds."""

    def counted(starts: Any, shared: bool = False, **kw: Any) -> Any:
        buf = gather(starts, shared=shared, **kw) if kw else gather(starts, shared=shared)
        slot.gathered(tokens)
        return buf

    return counted
