"""CUDAPrefetcher: keep ``depth`` batches in flight to the device, and checkpoint correctly.

Each batch fetched from the source is staged at once (on CUDA: a ``non_blocking`` copy on a
side stream, then the split into ``(x, y)`` and the upcast on the device, so only the
compact 2-byte tokens cross PCIe). The training loop gets batches in order; the compute
stream waits for each copy before use. Batches in flight are not consumed yet, so every
staged batch carries the source state taken right after it was fetched, and
``state_dict()`` returns the state of the last batch handed out: a checkpoint taken mid-
prefetch resumes at the next unseen batch.

All bookkeeping (queue, state pairing, dtype) lives here and runs the same on CPU; only
:class:`streamtok._staging.CUDAStage` touches CUDA (the device index is fixed at construction,
each batch gets its own event; see :mod:`streamtok._staging`).
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ._background import Background
from ._staging import CPUStage, CUDAStage, resolve_device
from .errors import ConfigError, PassActiveError
from .metrics.publish import RunPublisher

Batch = Any


class CUDAPrefetcher:
    """Wrap an iterable of batches: stage ``depth`` ahead on the device, state as consumed.

    Args:
        source: a :class:`~streamtok.StreamtokLoader` (compact batches, split on the device)
            or any iterable of tensors / tuples / namedtuples / lists / dicts of tensors
            (moved as they are). Each item must be made of fresh tensors: the copy of an item
            may still be in flight, and up to ``depth`` items are held, when the source makes
            the next one, so a source that refills one (pinned) buffer must yield a copy.
        device: target device; default ``cuda`` when available, else ``cpu``. ``"cuda"``
            without an index means ``cuda:LOCAL_RANK`` under torchrun, else the current device,
            fixed now (a warning says when it differs from ``LOCAL_RANK``).
        depth: batches staged ahead of the one in use (at least 1), with or without a thread.
        dtype: dtype of ``x`` and ``y`` for a streamtok source; default the loader's.
        background: take and stage batches in a background thread (see
            :mod:`streamtok._background`), so the training loop's ``next()`` only takes a
            staged batch; default on for a source with DataLoader workers (there taking a
            batch costs the taking thread ~190 µs of queue handshakes on 2 cores).

    Raises:
        ConfigError: ``depth < 1``, or a CUDA device this machine does not have.
    """

    def __init__(
        self,
        source: Iterable[Batch],
        device: str | torch.device | None = None,
        *,
        depth: int = 2,
        dtype: torch.dtype | None = None,
        background: bool | None = None,
    ):
        if depth < 1:
            raise ConfigError(f"depth must be at least 1, not {depth}")
        self.device = resolve_device(device)
        self.source = source
        self.depth = depth
        self.compact = hasattr(source, "iter_compact")
        self.dtype = dtype or getattr(getattr(source, "collator", None), "dtype", torch.int64)
        self._stage = CUDAStage(self.device) if self.device.type == "cuda" else CPUStage(self.device)
        self._queue: deque[tuple[Batch, Any]] = deque()
        self._state: Any = None  # source state as of the last batch handed out
        self.background = getattr(source, "num_workers", 0) > 0 if background is None else background
        self._thread: weakref.ref[Background] | None = None  # the last pass's, while it lives
        self._live_pass: object | None = None  # the running pass (iterator started, not finished or closed)
        self._took_from_source = False

    @property
    def in_flight(self) -> int:
        """Batches fetched and staged but not yet handed to the training loop."""
        running = self._thread() if self._thread is not None else None
        return len(self._queue) + (running.pending if running is not None else 0)

    def _source_state(self) -> Any:
        return self.source.state_dict() if hasattr(self.source, "state_dict") else None

    def __iter__(self) -> Iterator[Batch]:
        token = self._live_pass = object()  # a newer pass supersedes this one's claim
        self._took_from_source = True
        try:
            yield from self._pass()
        finally:
            if self._live_pass is token:
                self._live_pass = None

    def _pass(self) -> Iterator[Batch]:
        begun = time.perf_counter_ns()  # the loop is inside next() from here: its wait
        # An earlier pass's thread stops here; if it is blocked in its source for longer than
        # the join timeout, a streamtok loader still refuses it the position (a pass token).
        self._stop_thread()
        self._queue.clear()
        self._state = self._source_state()
        it = iter(self.source.iter_compact() if self.compact else self.source)  # type: ignore[attr-defined]
        published = getattr(self.source, "metrics", None)  # StreamtokLoader.metrics
        if not isinstance(published, RunPublisher):
            published = None
        # The loop is metered here, in its own slot: with a thread, the loader's meter times
        # that thread (the slot is claimed before the thread starts, which claims the
        # loader's); without, the loader's meter would count the staging as the loop's work.
        consumer = published.consumer(self.state_dict) if published is not None else None
        if published is not None:  # once per pass: the monitor shows the staging depth
            published.update_manifest(prefetch={"depth": self.depth, "device": str(self.device), "background": bool(self.background)})
        exhausted = False

        def staged(item: Batch) -> tuple[Batch, Any]:  # the state right after this batch
            return self._stage.stage(item, self.compact, self.dtype), self._source_state()

        if self.background:
            # The thread takes a batch only while fewer than `depth` are staged and not handed out.
            pairs = Background(it, staged, ahead=self.depth, setup=self._stage.enter_thread)
            self._thread = weakref.ref(pairs)

            def handed() -> Iterator[Batch]:
                for staged_batch, state in pairs:
                    self._state = state
                    yield self._stage.ready(staged_batch)

        else:
            self._thread = None
            pairs = map(staged, it)

            def fetch() -> None:
                nonlocal exhausted
                try:
                    self._queue.append(next(pairs))
                except StopIteration:
                    exhausted = True

            def handed() -> Iterator[Batch]:
                while not exhausted and len(self._queue) < self.depth:
                    fetch()
                while self._queue:
                    staged_batch, state = self._queue.popleft()
                    if not exhausted:
                        fetch()  # launch the next copy before the consumer uses this batch
                    self._state = state
                    yield self._stage.ready(staged_batch)

        yield from handed() if consumer is None else consumer(handed(), begun)
        self._state = self._source_state()  # the pass ended: as the source says (pass_ended)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def state_dict(self) -> Any:
        """The source's state as of the last batch handed out (not the ones in flight)."""
        return self._source_state() if self._state is None else self._state

    def _stop_thread(self) -> None:
        running = self._thread() if self._thread is not None else None
        if running is not None:
            running.close()

    def load_state_dict(self, state: Any) -> None:
        """Load a state into the source; the next iteration resumes after its batch.

        The same rule as :meth:`StreamtokLoader.load_state_dict`: not while a pass is running.

        Raises:
            PassActiveError: a pass over this prefetcher is still running (its iterator was
                started and not finished or closed): leave the loop or ``it.close()`` first.
            StateMismatchError: from the source, for a state of something else or a corrupt one.
        """
        if self._live_pass is not None:
            raise PassActiveError(
                "load_state_dict() while a pass over this CUDAPrefetcher is still running: its iterator "
                "would go on from the old position. Close it first (it.close(), or leave the loop); "
                "then load the state and iterate anew"
            )
        self._stop_thread()
        self._queue.clear()
        end_pass = getattr(self.source, "end_pass", None)
        if end_pass is not None and self._took_from_source:
            # The source's pass this prefetcher took from is over (a thread blocked past the
            # join timeout may still hold it): it must not move the position any more.
            end_pass()
        self.source.load_state_dict(state)  # type: ignore[attr-defined]
        self._state = None
