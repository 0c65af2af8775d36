"""The thread that samples a run every interval and posts each snapshot to the app.

It also follows: when the shown run has ended it asks for another live run and switches.
Snapshots themselves are made by :class:`~streamtok_monitor.snapshot.Sampler`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .snapshot import Sampler, Snapshot

__all__ = ["Sampler", "Snapshot", "Watcher"]


class Watcher(threading.Thread):
    """Calls ``sampler.sample()`` every ``interval_s`` and hands each snapshot to ``post``.

    With ``follow``: when the shown run has ended, ``follow(run_dir)`` is asked for a
    sampler of another live run, and the watcher switches to it; every later snapshot says
    so under ``"note"``. :meth:`switch` changes the run by hand (the app's run picker).
    """

    def __init__(
        self, sampler: Sampler, post: Callable[[Snapshot], None], interval_s: float = 1.0,
        on_error: Callable[[BaseException], None] | None = None,
        follow: Callable[[str | None], Sampler | None] | None = None,
    ):
        super().__init__(name="streamtok-monitor-watcher", daemon=True)
        self.sampler, self.post, self.interval_s, self.on_error = sampler, post, interval_s, on_error
        self.follow = follow
        self.note: str | None = None
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self._lock = threading.Lock()

    def switch(self, sampler: Sampler, note: str) -> None:
        """Show ``sampler``'s run from the next sample on.

        Args:
            sampler: the new run's sampler.
            note: what the title says about the switch.
        """
        with self._lock:
            self.sampler, self.note = sampler, note

    def _sample(self) -> Snapshot:
        with self._lock:
            sampler = self.sampler
        snap = sampler.sample()
        if self.follow is not None and snap["run"]["status"] == "ended":
            nxt = self.follow(sampler.run_dir)
            if nxt is not None:
                name = os.path.basename(sampler.run_dir or "")
                self.switch(nxt, f"followed here after {name} ended")
                snap = nxt.sample()
        if self.note:
            snap["note"] = self.note
        return snap

    def run(self) -> None:
        while not self.stopped.is_set():
            if not self.paused.is_set():
                try:
                    snap = self._sample()
                except Exception as e:  # reported to the app, which stays up with its last figures
                    if self.on_error is None:
                        raise
                    self.on_error(e)
                else:
                    self.post(snap)
            self.stopped.wait(self.interval_s)

    def stop(self) -> None:
        self.stopped.set()
