"""The storage loop: an asyncio loop that knows when obstore's threads are done with Python.

obstore runs each request on its Rust runtime (tokio) and finishes it from one of that
runtime's threads, which are no Python threads: the thread attaches to the interpreter
(``PyGILState_Ensure``), asks the request's asyncio future whether it was cancelled, hands the
result to the loop with ``loop.call_soon_threadsafe`` unless it was, and detaches
(pyo3-async-runtimes' ``future_into_py``). It does so also for a request whose future was
cancelled, some time after the cancellation. A thread that attaches once the interpreter is
finalizing is made to exit by CPython (``pthread_exit``), which unwinds through Rust frames:
the process aborts ("FATAL: exception not rethrown", rc -6), or crashes (SIGSEGV, SIGBUS) if
the interpreter is already gone. Cancelling the requests at exit and waiting for their
asyncio tasks does not wait for that last visit, and a loop stopped right after that may not
even have passed the cancellations on (obstore learns of one from a done-callback the loop runs):
8 of 270 runs of a script that read one batch and ended still crashed so (loaded 2-core VM),
0 of 270 with this loop (see ``store._drain_at_exit``).

This loop counts the visits still owed. A future obstore creates while :func:`rust_call` runs
is a :class:`_RustFuture`, owed one visit; the visit is over when the visiting thread detaches,
which shows as a marker object kept only in a ``threading.local`` of the visiting thread: the
marker is freed when the thread's state is cleared on detach (by C code: no Python code runs
after it, so the thread cannot be made to wait for the interpreter again), and a weak
reference to it goes dead. :meth:`StorageLoop.wait_rust_idle`
waits, bounded, for both counts to settle; the exit hook calls it before the interpreter
finalizes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

_POLL_S = 0.002
_visits = threading.local()  # on an obstore thread, while it is attached: its _Visit


class _Visit:
    """A marker that lives exactly as long as one attachment of a foreign thread (weakref-able)."""


class _RustFuture(asyncio.Future):
    """The future of one obstore call on a :class:`StorageLoop`: owed one visit from obstore's thread."""

    def cancelled(self) -> bool:
        """As :meth:`asyncio.Future.cancelled`; asked from obstore's thread, it is the visit."""
        answer = super().cancelled()
        loop = self.get_loop()
        if answer and isinstance(loop, StorageLoop) and threading.get_ident() != loop.thread_id:
            loop._visited(self)  # a cancelled request: no call_soon_threadsafe follows
        return answer


class StorageLoop(asyncio.SelectorEventLoop):
    """The storage thread's loop: counts obstore's visits still owed (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread_id: int | None = None  # set by the thread that runs the loop
        self.exiting = False  # set by the exit hook: no new requests
        self._arming = False
        self._lock = threading.Lock()
        self._owed: set[_RustFuture] = set()
        self._attached: list[weakref.ref] = []  # one per attachment seen: dead once it detached
        self._prune_at = 256

    def run_forever(self) -> None:
        self.thread_id = threading.get_ident()
        super().run_forever()

    def create_future(self) -> asyncio.Future:
        if not self._arming:
            return super().create_future()
        fut = _RustFuture(loop=self)
        with self._lock:
            self._owed.add(fut)
        return fut

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any, context: Any = None) -> asyncio.Handle:
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        finally:  # obstore handing over a result: its last call into Python (also if the loop is closed)
            if args and isinstance(args[0], _RustFuture) and threading.get_ident() != self.thread_id:
                self._visited(args[0])

    def _visited(self, fut: _RustFuture) -> None:
        with self._lock:
            if getattr(_visits, "mark", None) is None:  # this attachment's first visit
                mark = _visits.mark = _Visit()
                self._attached.append(weakref.ref(mark))
                if len(self._attached) >= self._prune_at:
                    self._attached = [r for r in self._attached if r() is not None]
                    self._prune_at = 2 * len(self._attached) + 256
            self._owed.discard(fut)

    def rust_pending(self) -> tuple[int, int]:
        """(visits owed, attachments not over): both 0 once obstore's threads are done with Python."""
        with self._lock:
            return len(self._owed), sum(1 for r in self._attached if r() is not None)

    def wait_rust_idle(self, timeout_s: float) -> bool:
        """Wait until no visit is owed and every visiting thread detached (at most ``timeout_s``); whether so.

        Call it from a thread other than the loop's, after the requests were cancelled or done.
        """
        deadline = time.monotonic() + timeout_s
        while self.rust_pending() != (0, 0):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)  # lets a visiting thread take the GIL and finish
        return True


def rust_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, an obstore call returning a future, made on the storage loop's thread.

    The future it creates is counted (see :class:`StorageLoop`); on another loop, a plain call.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, StorageLoop):
        return fn(*args, **kwargs)
    loop._arming = True
    try:
        return fn(*args, **kwargs)
    finally:
        loop._arming = False
