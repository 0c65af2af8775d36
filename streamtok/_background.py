"""Run an iterator in a background thread, so the training loop's thread only takes results.

Taking a batch from a multi-worker DataLoader costs the taking thread far more than the
bytes: a queue read, then a request to the next worker through a queue whose feeder thread
needs the GIL (measured on 2 cores: ~190 µs of the trainer's thread per batch). While the
training loop waits on the GPU it holds no GIL, so a thread that does that work for it, a
few batches ahead, costs the loop only a ``Queue.get`` (a few µs when a batch is ready).

Items are computed in order by ``fn(next(source))`` in the thread; errors re-raise in the
consumer. The thread stops when the consumer lets go of the :class:`Background` object
(garbage-collected after ``break``) or calls ``close()``; the DataLoader workers shut down
once the last reference to the source's iterator is gone.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()
_POLL_S = 0.05  # how often a thread blocked on a full queue checks whether it was abandoned


def _shutdown(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    if thread is not threading.current_thread():
        thread.join(timeout=30)


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _produce(source: Iterator[Any], fn: Callable[[Any], Any], out: queue.Queue, stop: threading.Event) -> None:
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in source:
            if not put(fn(item)):
                return
        put(_DONE)
    except BaseException as exc:  # re-raised in the consumer's thread
        put(_Failure(exc))


class Background:
    """Iterate ``fn(item) for item in source``, computed ``ahead`` items early in a thread.

    Args:
        source: the iterator to drain; only the thread touches it after this call.
        fn: applied to each item in the thread (e.g. pairing it with the state after it).
        ahead: items computed and waiting at most (at least 1).
    """

    def __init__(self, source: Iterator[Any], fn: Callable[[Any], Any], *, ahead: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce, args=(source, fn, self._queue, self._stop), name="streamtok-prefetch", daemon=True
        )
        self._thread.start()
        # Abandoned (or at exit): stop the thread and wait for it, so the source (e.g. a
        # DataLoader iterator and its workers) is shut down by it, not torn down mid-call.
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._thread)

    def __iter__(self) -> Background:
        return self

    def __next__(self) -> Any:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._stop.set()
            raise StopIteration
        if isinstance(item, _Failure):
            self._stop.set()
            raise item.exc
        return item

    @property
    def pending(self) -> int:
        """Items computed and waiting to be taken."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop the thread and wait for it (it exits once the source yields its next item)."""
        self._finalizer()
