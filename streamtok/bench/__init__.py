"""``streamtok bench``: the loader against nanoGPT's, torchdata's and the peers', side by side.

    cli.py          the command: make data, run each contestant in its own process, the table
    contestants.py  each contestant's loop (one process each, so none warms another's cache)
    run.py          the timed loop every contestant shares: warm-up, then batches per second
"""

from __future__ import annotations

from .._lazy import lazy_names

_NAMES = {name: "cli" for name in (
    "BASELINE", "FULL", "QUICK", "handler", "json_safe", "label", "machine", "make_data", "register",
    "run_all", "run_contestant", "settings_from", "table",
)}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
