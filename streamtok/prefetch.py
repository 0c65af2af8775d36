"""CUDAPrefetcher: keep ``depth`` batches in flight to the device, and checkpoint correctly.

Each batch fetched from the source is staged at once (on CUDA: a ``non_blocking`` copy on a
side stream, then the split into ``(x, y)`` and the upcast on the device, so only the
compact 2-byte tokens cross PCIe). The training loop gets batches in order; the compute
stream waits for each copy before use. Batches in flight are not consumed yet, so every
staged batch carries the source state taken right after it was fetched, and
``state_dict()`` returns the state of the last batch handed out: a checkpoint taken mid-
prefetch resumes at the next unseen batch.

All bookkeeping (queue, state pairing, dtype) lives here and runs the same on CPU; only
:class:`_CUDAStage` touches CUDA.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ._background import Background
from .collate import split
from .errors import ConfigError

Batch = Any


def _to_device(item: Batch, device: torch.device, non_blocking: bool) -> Batch:
    if isinstance(item, torch.Tensor):
        return item.to(device, non_blocking=non_blocking)
    if isinstance(item, (tuple, list)):
        return type(item)(_to_device(i, device, non_blocking) for i in item)
    if isinstance(item, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in item.items()}
    return item


def _tensors(item: Batch) -> Iterator[torch.Tensor]:
    if isinstance(item, torch.Tensor):
        yield item
    elif isinstance(item, (tuple, list)):
        for i in item:
            yield from _tensors(i)
    elif isinstance(item, dict):
        for v in item.values():
            yield from _tensors(v)


class _CPUStage:
    """Staging without CUDA: the split and upcast happen on the host, nothing waits."""

    def __init__(self, device: torch.device):
        self.device = device

    def stage(self, item: Batch, compact: bool, dtype: torch.dtype) -> Batch:
        if compact:
            return split(item, dtype)
        return _to_device(item, self.device, non_blocking=False)

    def ready(self, staged: Batch) -> Batch:
        return staged


class _CUDAStage:
    """Staging on a side stream; ``ready`` makes the consumer's stream wait for the copy."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    def stage(self, item: Batch, compact: bool, dtype: torch.dtype) -> Batch:
        with torch.cuda.stream(self.stream):
            moved = _to_device(item, self.device, non_blocking=True)
            return split(moved, dtype) if compact else moved

    def ready(self, staged: Batch) -> Batch:
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        for t in _tensors(staged):
            t.record_stream(current)  # the allocator must not reuse it before compute is done
        return staged


class CUDAPrefetcher:
    """Wrap an iterable of batches: stage ``depth`` ahead on the device, state as consumed.

    Args:
        source: a :class:`~streamtok.StreamtokLoader` (compact batches, split on the device)
            or any iterable of tensors / tuples / dicts of tensors (moved as they are).
        device: target device; default ``cuda`` when available, else ``cpu``.
        depth: batches staged ahead of the one in use (at least 1).
        dtype: dtype of ``x`` and ``y`` for a streamtok source; default the loader's.
        background: take and stage batches in a background thread (see
            :mod:`streamtok._background`), so the training loop's ``next()`` only takes a
            staged batch; default on for a source with DataLoader workers (there taking a
            batch costs the taking thread ~190 µs of queue handshakes on 2 cores).

    Raises:
        ConfigError: ``depth < 1``, or a CUDA device asked for on a machine without CUDA.
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
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device} asked for, but CUDA is not available here")
        self.source = source
        self.depth = depth
        self.compact = hasattr(source, "iter_compact")
        self.dtype = dtype or getattr(getattr(source, "collator", None), "dtype", torch.int64)
        self._stage = _CUDAStage(self.device) if self.device.type == "cuda" else _CPUStage(self.device)
        self._queue: deque[tuple[Batch, Any]] = deque()
        self._state: Any = None  # source state as of the last batch handed out
        self.background = getattr(source, "num_workers", 0) > 0 if background is None else background
        self._thread: weakref.ref[Background] | None = None  # the last pass's, while it lives

    @property
    def in_flight(self) -> int:
        """Batches fetched and staged but not yet handed to the training loop."""
        running = self._thread() if self._thread is not None else None
        return len(self._queue) + (running.pending if running is not None else 0)

    def _source_state(self) -> Any:
        return self.source.state_dict() if hasattr(self.source, "state_dict") else None

    def __iter__(self) -> Iterator[Batch]:
        self._stop_thread()  # an earlier pass's thread must not advance the source any more
        self._queue.clear()
        self._state = self._source_state()
        it = iter(self.source.iter_compact() if self.compact else self.source)  # type: ignore[attr-defined]
        published = getattr(self.source, "_metrics", None)  # streamtok.metrics.RunPublisher
        # With a thread the loader's meter times that thread, so the loop is metered here, in
        # its own slot, claimed before the thread starts (which claims the loader's slot).
        consumer = published.consumer(self.state_dict) if published is not None and self.background else None
        if published is not None:  # once per pass: the monitor shows the staging depth
            published.update_manifest(prefetch={"depth": self.depth, "device": str(self.device), "background": bool(self.background)})
        exhausted = False

        def staged(item: Batch) -> tuple[Batch, Any]:  # the state right after this batch
            return self._stage.stage(item, self.compact, self.dtype), self._source_state()

        if self.background:
            # The thread stages one batch while `depth - 1` wait in its queue: `depth` ahead.
            pairs = Background(it, staged, ahead=max(1, self.depth - 1))
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

        yield from handed() if consumer is None else consumer(handed())

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
        """Load a state into the source; the next iteration resumes after its batch."""
        self._stop_thread()
        self._queue.clear()
        self._state = None
        end_pass = getattr(self.source, "end_pass", None)
        if end_pass is not None:  # the pass this prefetcher was taking from must not go on
            end_pass()
        self.source.load_state_dict(state)  # type: ignore[attr-defined]
