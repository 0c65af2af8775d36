"""Messages the watcher thread posts to the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class SnapshotReady(Message):
    """A new snapshot of the run (see :meth:`streamtok_monitor.watcher.Sampler.sample`)."""

    snapshot: dict[str, Any]


@dataclass
class SampleFailed(Message):
    """Sampling raised; the watcher keeps going and the app says why."""

    error: str
