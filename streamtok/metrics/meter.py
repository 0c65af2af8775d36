"""What the training loop and the workers count, at a few operations per batch.

:class:`Meter` wraps the batches the training loop iterates (the loader's, or a background
prefetcher's) and times a sample of its waits; :func:`counting_gather` counts a worker's
batches. Both store into their own slot (see :mod:`._stats`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from .layout import SlotWriter, SourceRows


class Meter:
    """The trainer's side: iterates the loop's batches, timing the training loop's wait.

    A batch's wait is all the time the loop spends inside ``next()``: from the moment it
    asks for a batch until it holds it, the split into ``(x, y)`` and the first batch's
    worker start included (with workers, mostly the queue wait; without, the gather itself).

    The estimator (issue 21): the wait is the wall time minus the loop's own work, and only
    the work is sampled. Every timed batch reads the clock when the loop receives it and
    again when the loop asks for the next one; between two timed receipts the wall time is
    exact, so every stall inside ``next()`` (preemption, a cold page, a late worker), timed
    batch or not, is in it. The block's ``k`` batches of work are the timed batch's own
    measured work plus ``k - 1`` times a typical one (the smaller of the last two measured:
    a preempted sample does not stand for the others), and the block's wait is the rest
    (never below zero). Sampling the wait instead (the earlier estimator) saw a stall only
    when it hit a timed batch, and capped the one it saw: 55% shown for a loop that waited
    99.8% of its time.

    Clock reads are what cost here (~70-150 ns each in this VM), so a loop that does
    almost nothing but take fast batches (under ``SLOW_NS``, 50 µs, each, and its own work
    under 1/8 of that) times one batch in ``stride`` (up to 64, blocks of about 1-4 ms) at
    a random phase (no aliasing with a loop or worker period); any other loop times every
    batch, and its wait is exact (two clock reads per batch, < 1% of its time). Per
    untimed batch: an add, a test and a generator step, as before. The work extrapolated
    is then under 1/8 of the time, so a stall of the loop's own step at an untimed batch
    (preemption, a log line), counted as wait, moves "waiting" by at most that share of
    the stalls (``benchmarks/bench_wait.py`` replays such traces).

    Totals are stored into the slot at most every ``PUBLISH_NS`` (5 ms, at a timed batch)
    and at the end of the pass; ``batches`` has advanced the position past each batch
    before handing it out, so position and count always match. At its first batch (or its
    end, if empty) a pass stores where it began, with the pass count. A pass the loop
    leaves early (``break``) counts its untimed last batches at the last block's wait per
    batch: the time until the iterator is closed may be anything. The same class meters a
    background prefetcher's iterator for the training loop (see :class:`Consumed`). A
    mixture's per-source counts (``sources``) are asked for only when the totals are
    stored, so they are those of the same position.

    Args:
        batches: the batches as the loop receives them.
        slot: the slot to write.
        sampler: ``batch_size``, ``seq_len`` and the position ``epoch``, ``offset``.
        start: where the pass began (``epoch``, ``offset``), asked at its first batch;
            default: the position when iteration starts.
        sources: a mixture's per-source counts at the position (see :class:`SourceRows`).
        since: ``perf_counter_ns`` when the loop entered the pass's first ``next()``, if
            before this iterator starts (a prefetcher's set-up); default: when it starts.
    """

    PUBLISH_NS = 5_000_000
    MAX_STRIDE = 64
    SLOW_NS = 50_000  # a loop whose batches take this long or more is timed at every batch
    MIN_EXACT_NS = 10_000  # faster batches are sampled whatever the loop's share of the time

    def __init__(
        self, batches: Iterator[Any], slot: SlotWriter, sampler: Any, *, start: Callable[[], Any] | None = None,
        sources: Callable[[], SourceRows] | None = None, since: int | None = None,
    ):
        self.batches, self.slot, self.sampler, self.start = batches, slot, sampler, start
        self.sources, self.since = sources, since

    def _begin(self, entry: tuple[int, int]) -> None:
        where = self.start() if self.start is not None else None
        self.slot.new_pass(*((where.epoch, where.offset) if where is not None else entry))

    def _exact(self, gap: int, k: int, work: int) -> bool:
        """Whether a loop whose ``k`` batches took ``gap`` ns, ``work`` of it its own, is
        timed at every batch (slow batches, or a loop whose own work is 1/8 or more)."""
        return gap >= k * self.SLOW_NS or (gap >= k * self.MIN_EXACT_NS and 8 * work >= gap)

    def __iter__(self) -> Iterator[Any]:
        clock, slot, s, mix = time.perf_counter_ns, self.slot, self.sampler, self.sources
        tokens = s.batch_size * s.seq_len
        # Totals continue from earlier passes in this process (the slot is claimed once).
        n, wait, tokens0, n0 = slot.batches, slot.wait_ns, slot.tokens, slot.batches
        entry, begun = (s.epoch, s.offset), False
        slot.set_iterating(True)
        asked = clock() if self.since is None else self.since  # the loop's last ask (exact mode)
        exact, seen = True, (asked, wait, n)  # exact: every batch timed; seen: where it was last judged
        # Sampled mode: the last timed batch (its receipt, number and work), a typical work.
        stride, rnd = 1, n0 * 2654435761 + 1  # the random phase: a small LCG, stepped per timed batch
        timed, last, last_n, work, typical = 0, asked, n, 0, 0
        due = asked + self.PUBLISH_NS
        block_wait = 0  # the last block's wait per batch (for a pass left early)
        pending = 0  # the receipt of a timed batch handed out and not yet accounted for
        try:
            for buf in self.batches:
                n += 1
                if exact:
                    t1 = clock()
                    wait += t1 - asked
                    if not begun:
                        begun = True
                        self._begin(entry)
                    yield buf
                    asked = clock()
                    if asked >= due:  # inside the loop's next call: the next batch's wait
                        due = asked + self.PUBLISH_NS
                        slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset, mix and mix())
                        k, gap = n - seen[2], asked - seen[0]
                        if not self._exact(gap, k, gap - (wait - seen[1])):
                            exact, stride, timed = False, 2, n + 2
                            last, last_n, work, typical = asked, n, 0, (gap - (wait - seen[1])) // k
                        seen = (asked, wait, n)
                    continue
                if n < timed:
                    yield buf
                    continue
                t1 = pending = clock()
                yield buf
                t2, pending = clock(), 0
                # The rest runs inside the loop's next call: its time is the next batch's wait.
                k, gap = n - last_n, t1 - last
                est = work + (k - 1) * typical  # the last timed batch's work, and k - 1 more
                w = gap - est if gap > est else 0
                wait += w
                block_wait = w // k
                w = t2 - t1  # this batch's work: from its receipt until the loop asked again
                typical = w if w < work or not work else work
                work, last, last_n = w, t1, n
                if self._exact(gap, k, k * typical):
                    exact, asked, seen = True, t2, (t2, wait + w, n)
                    continue
                if gap < 1_000_000 and stride < self.MAX_STRIDE:
                    stride *= 2
                elif gap > 4_000_000 and stride > 1:
                    stride //= 2
                if stride > 2:
                    rnd = (rnd * 1103515245 + 12345) & 0x7FFFFFFF
                    timed = n + stride // 2 + rnd % stride  # a random phase, on average `stride`
                else:
                    timed = n + stride
                if t2 >= due:
                    due = t2 + self.PUBLISH_NS
                    slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset, mix and mix())
            # The pass ended (the call that ended it included: with workers, their shutdown).
            if exact:
                wait += clock() - asked
            else:
                k, gap = n - last_n, clock() - last
                est = work + k * typical  # the last timed batch's work, and k more
                wait += gap - est if gap > est else 0
            last_n = n
        finally:  # end of the pass, or left early (break, exception, close)
            if exact:
                pass  # every batch's wait is counted at its receipt
            elif pending:  # left at a timed batch: its block ends at its receipt, measured
                k, gap = n - last_n, pending - last
                est = work + (k - 1) * typical
                wait += gap - est if gap > est else 0
            elif n > last_n:
                # Left after untimed batches: the time until the close is theirs and then the
                # loop's (a step, or anything: the iterator may be closed much later), so
                # their wait counts as measured but at most max(1 ms, the last block's) each.
                k, gap = n - last_n, clock() - last
                est = work + k * typical
                wait += min(gap - est if gap > est else 0, k * max(block_wait, 1_000_000))
            if not begun:
                self._begin(entry)
            slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset, mix and mix())
            slot.set_iterating(False)


class Consumed:
    """The position a consumer :class:`Meter` publishes: that of the training loop.

    ``CUDAPrefetcher(background=True)`` iterates the loader on its own thread, so the
    loader's :class:`Meter` (slot 0) times that thread's wait for the DataLoader, and its
    count and position run ahead of the loop by the batches in flight; without a thread
    (``background=False``) its batches are still staged ahead, and the staging, inside the
    loop's ``next()``, is outside the loader's. So a second Meter,
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
    return step, windows, [(r["windows"], r["tokens"], r["target"], float(r["weight"]), r["epoch"]) for r in report]


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
