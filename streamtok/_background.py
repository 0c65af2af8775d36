"""Run an iterator in a background thread, so the training loop's thread only takes results.

Taking a batch from a multi-worker DataLoader costs the taking thread far more than the
bytes: a queue read, then a request to the next worker through a queue whose feeder thread
needs the GIL (measured on 2 cores: ~190 µs of the trainer's thread per batch). While the
training loop waits on the GPU it holds no GIL, so a thread that does that work for it, a
few batches ahead, costs the loop only a ``Queue.get`` (a few µs when a batch is ready).

Items are computed in order by ``fn(next(source))`` in the thread; errors re-raise in the
consumer. The thread takes the next item only while fewer than ``ahead`` are computed and not
yet taken (a permit per item, returned when the consumer takes one), so ``ahead=1`` means
exactly one item ahead. The thread stops when the consumer lets go of the
:class:`Background` object (garbage-collected after ``break``) or calls ``close()``; the
DataLoader workers shut down once the last reference to the source's iterator is gone.
"""

from __future__ import annotations

import queue
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()
_POLL_S = 0.05  # how often a thread waiting for a permit checks whether it was abandoned
_JOIN_S = 30.0  # how long close() waits for a thread blocked inside its source


def _shutdown(stop: threading.Event, thread: threading.Thread, out: queue.SimpleQueue) -> None:
    stop.set()
    out.put(_DONE)  # a consumer waiting in another thread ends instead of waiting forever
    if thread is threading.current_thread() or not thread.is_alive():
        return
    thread.join(timeout=_JOIN_S)
    if thread.is_alive():
        warnings.warn(
            f"the prefetch thread did not stop within {_JOIN_S:.0f} s (its source is blocked); "
            "it hands out nothing more, and a streamtok loader ignores it",
            RuntimeWarning,
            stacklevel=2,
        )


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _produce(
    source: Iterator[Any],
    fn: Callable[[Any], Any],
    out: queue.SimpleQueue,
    permits: threading.Semaphore,
    stop: threading.Event,
    setup: Callable[[], None] | None,
) -> None:
    try:
        if setup is not None:
            setup()
        while True:
            while not permits.acquire(timeout=_POLL_S):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            try:
                item = next(source)
            except StopIteration:
                out.put(_DONE)
                return
            out.put(fn(item))
    except BaseException as exc:  # re-raised in the consumer's thread
        out.put(_Failure(exc))


class Background:
    """Iterate ``fn(item) for item in source``, at most ``ahead`` items early, in a thread.

    Args:
        source: the iterator to drain; only the thread touches it after this call.
        fn: applied to each item in the thread (e.g. pairing it with the state after it).
        ahead: items taken from ``source`` and not yet by the consumer, at most (at least 1).
        setup: called once in the thread before anything else (e.g. to set its CUDA device).
    """

    def __init__(
        self,
        source: Iterator[Any],
        fn: Callable[[Any], Any],
        *,
        ahead: int = 2,
        setup: Callable[[], None] | None = None,
    ):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._permits = threading.Semaphore(max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce,
            args=(source, fn, self._queue, self._permits, self._stop, setup),
            name="streamtok-prefetch",
            daemon=True,
        )
        self._thread.start()
        # Abandoned (or at exit): stop the thread and wait for it, so the source (e.g. a
        # DataLoader iterator and its workers) is shut down by it, not torn down mid-call.
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._thread, self._queue)

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
        self._permits.release()
        return item

    @property
    def pending(self) -> int:
        """Items computed and waiting to be taken."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop the thread and wait for it (it exits once the source yields its next item).

        A thread still blocked in its source after ``_JOIN_S`` is left behind with a warning:
        it can hand out nothing more (the stop flag is checked before each item).
        """
        self._finalizer()
