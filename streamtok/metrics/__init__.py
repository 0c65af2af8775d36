"""Live counters of a training run, for ``streamtok-monitor`` (no torch, no training stopped).

    layout.py   the binary layout of a run's stats file (one slot per process) and its reader
    rundir.py   the run directories: where they live, their manifests, which are alive, pruning
    meter.py    the trainer's meter: time waiting for batches vs working on them
    publish.py  RunPublisher: what a loader writes, and what the monitor reads back

Every name below is importable from here (what the monitor and tools use).
"""

from __future__ import annotations

from .publish import *  # noqa: F403
from .publish import __all__  # noqa: F401
