"""Which run to show: the busiest live one, the next one when it ends, one picked by hand.

Pure functions of the run root (see :mod:`streamtok.metrics.publish`); the app and the command line
call them, the watcher thread calls :func:`next_run` when the shown run has ended.
"""

from __future__ import annotations

import time

from streamtok.metrics import publish as metrics

from .snapshot import Sampler


def _batches(run: metrics.RunInfo) -> int:
    try:
        return metrics.StatsReader(run.dir).slot(0)["batches"]
    except (OSError, ValueError):
        return 0


def busiest(live: list[metrics.RunInfo]) -> metrics.RunInfo:
    """The live run to open by default: the one that has delivered the most batches.

    A training script often builds a validation loader after its training loader; the newest
    run alone would then be the mostly idle validation one. Ties go to the newest.

    Args:
        live: candidate runs (at least one).
    """
    return max(live, key=lambda r: (_batches(r), r.created))


def live_runs(root: str | None = None) -> list[metrics.RunInfo]:
    """The runs under ``root`` whose trainer is alive on this host, newest first.

    Args:
        root: the run root; default :func:`streamtok.metrics.publish.run_root`.
    """
    return [r for r in metrics.list_runs(root) if r.alive]


def next_run(current: str | None, root: str | None = None) -> Sampler | None:
    """A sampler of the busiest live run other than ``current``, or ``None`` if there is none.

    Runs whose files cannot be read or checked are passed over.

    Args:
        current: the run directory shown now.
        root: the run root; default :func:`streamtok.metrics.publish.run_root`.
    """
    live = [r for r in live_runs(root) if r.dir != current]
    while live:
        run = busiest(live)
        try:
            return Sampler(run_dir=run.dir)
        except (OSError, ValueError):
            live.remove(run)
    return None


def wait_for_run(interval_s: float, root: str | None = None, timeout_s: float | None = None) -> list[metrics.RunInfo]:
    """Poll every ``interval_s`` until a live run appears; its list (empty after ``timeout_s``).

    Args:
        interval_s: seconds between looks.
        root: the run root; default :func:`streamtok.metrics.publish.run_root`.
        timeout_s: give up after this long (``None``: wait forever).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        live = live_runs(root)
        if live or (deadline is not None and time.monotonic() >= deadline):
            return live
        time.sleep(interval_s)
