"""The mixture schedule: how many windows of each source every global step takes.

Weights are given per phase (``[(step, {name: w}), ...]``) and integrate, over the windows
of the run, into a real target ``tau_s(G)`` per source (``G``: windows so far, all ranks).
Each source's count ``C_s`` follows its target by earliest-deadline-first over unit jobs,
the rule of Tijdeman's chairman assignment (1980): unit ``j`` of source ``s`` may be taken
once ``tau_s >= C_s + j - 1 + d`` and is due when ``tau_s`` reaches ``C_s + j - d``, with
``d = 1 / (2S - 2)``; a step of ``b`` windows takes the ``b`` released units due first. With
positive weights ``|C_s - tau_s| < 1`` after every step (Tijdeman proves ``<= 1 - d`` for one
window a step; measured at most 0.92 for any step size and schedule). A source paused at
weight 0 gets nothing while paused, so what it lacks when it pauses falls on the others:
then the counts stay within one step for ``b >= 2`` windows a step (measured: 0.64 of a
step at worst), but with one window a step several sources pausing together can leave a
count up to ~1.4 windows off (measured); avoiding it would need the paused group's total
rounded as well, which this rule does not do.

The arithmetic is relative to the anchor: counts and targets are measured from
``base = floor(targets at the anchor)`` and deadlines from the step's own window position,
so a schedule re-anchored at other counts (a mixture's new pass, see
:mod:`streamtok.mixture.sampler`) takes, and orders, exactly the same windows as from zero; measured
in absolute numbers, the rounding of large counts could break a tie the other way.

Cost: a step is O(S) float operations (deadlines of the last and next unit of each source,
one walk over the phases ahead at most), whatever the step number or the time since a weight
change. The state is the counts plus the anchor ``(step, windows, targets)`` the targets are
integrated from, so a resume jumps to any step without replay.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

# A unit due less than half a window after a source pauses is due when it pauses, so a
# paused source stops within half a window of its target, not up to one behind (its deficit
# would fall on the others: measured at 2 windows a step, 1.0 of a step without, 0.64 with).
PAUSE_SLACK = 0.5
Weights = Mapping[str, float] | Sequence[tuple[int, Mapping[str, float]]]


def parse_weights(weights: Weights, names: Sequence[str]) -> tuple[tuple[int, tuple[float, ...]], ...]:
    """Phases ``((step, normalised weights in the order of names), ...)``, checked.

    Raises:
        ConfigError: unknown or missing names, a negative, non-finite or all-zero phase, or
            a schedule that is empty, unsorted or does not start at step 0.
    """
    if isinstance(weights, Mapping):
        pairs: list[Any] = [(0, weights)]
    elif isinstance(weights, (list, tuple)):
        pairs = list(weights)
    else:
        raise ConfigError(f"weights must be a mapping {{name: weight}} or a list of (step, {{name: weight}}), not {weights!r}")
    if not pairs:
        raise ConfigError("weights schedule is empty; give at least (0, {name: weight})")
    phases, last = [], -1
    for item in pairs:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], Mapping)):
            raise ConfigError(f"weights schedule entry {item!r} is not a (step, {{name: weight}}) pair")
        step, table = item
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ConfigError(f"weights schedule step {step!r} is not a non-negative integer")
        if last < 0 and step != 0:
            raise ConfigError(f"weights schedule must start at step 0, not at step {step}")
        if step <= last:
            raise ConfigError(f"weights schedule is not sorted by step: step {step} comes after step {last}")
        unknown, missing = sorted(set(table) - set(names)), sorted(set(names) - set(table))
        if unknown:
            raise ConfigError(f"weights at step {step} name unknown source(s) {unknown}; sources are {sorted(names)}")
        if missing:
            raise ConfigError(f"weights at step {step} miss source(s) {missing}; give every source a weight (0 pauses one)")
        values = []
        for name in names:
            w = table[name]
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"weight of source {name!r} at step {step} must be a finite number >= 0, not {w!r}")
            values.append(float(w))
        total = sum(values)  # inf when it overflows: refused below
        if total <= 0:
            raise ConfigError(f"weights at step {step} are all zero; at least one source needs a positive weight")
        if not math.isfinite(total):
            raise ConfigError(
                f"weights at step {step} ({dict(zip(names, values))}) sum to more than the largest float; "
                "only their ratios matter: give smaller numbers, e.g. shares that sum to 1"
            )
        step = int(step)
        phases.append((step, tuple(v / total for v in values)))  # a share that rounds to 0 pauses
        last = step
    return tuple(phases)


@dataclass(frozen=True)
class Anchor:
    """Where the targets are integrated from: a global step, its window count, the targets then.

    The targets start as the counts at step 0, at a resume with other weights or sources
    and at each new pass of a finite mixture (the proportions are measured from there); a
    resume with another step size carries them on.
    """

    step: int
    windows: int
    targets: tuple[float, ...]


class Timeline:
    """The targets ``tau_s(G)`` from an anchor on, for a step of ``step_windows`` windows.

    Args:
        phases: from :func:`parse_weights`.
        anchor: the step, window count and per-source targets to integrate from.
        step_windows: windows per global step ``b`` (batch size times world size).
    """

    def __init__(self, phases: Sequence[tuple[int, tuple[float, ...]]], anchor: Anchor, step_windows: int):
        self.n = len(anchor.targets)
        self.b = step_windows
        self.delta = 1.0 / (2 * self.n - 2) if self.n > 1 else 0.0
        # Counts and targets are measured from here (exact: t - floor(t) loses no bits).
        self.base = tuple(math.floor(t) for t in anchor.targets)
        first = max(i for i, (s, _) in enumerate(phases) if s <= anchor.step)
        tau = [float(t) - b for t, b in zip(anchor.targets, self.base)]
        starts, weights, taus = [], [], []
        for i in range(first, len(phases)):
            g = max(phases[i][0], anchor.step)
            at = anchor.windows + (g - anchor.step) * step_windows
            if starts:
                span = at - starts[-1]
                tau = [t + w * span for t, w in zip(tau, weights[-1])]
            starts.append(at)
            weights.append(phases[i][1])
            taus.append(tuple(tau))
        self.starts, self.weights, self.taus = starts, weights, taus
        self._arrays = (  # the phases as arrays, for order_keys
            np.asarray(starts, dtype=np.int64),
            np.asarray(weights, dtype=np.float64).reshape(-1, self.n),
            np.asarray(taus, dtype=np.float64).reshape(-1, self.n),
        )

    def segment(self, windows: int) -> int:
        """Index of the phase that holds window position ``windows``."""
        return bisect.bisect_right(self.starts, windows) - 1

    def tau(self, k: int, windows: float) -> tuple[float, ...]:
        """Targets at window position ``windows`` inside segment ``k``, less :attr:`base`."""
        span = windows - self.starts[k]
        return tuple(t + w * span for t, w in zip(self.taus[k], self.weights[k]))

    def targets(self, windows: int) -> tuple[float, ...]:
        """The targets at window position ``windows``, in absolute counts (for reports)."""
        return tuple(t + b for t, b in zip(self.tau(self.segment(windows), windows), self.base))

    def due(self, s: int, level: float, k: int, windows: int, tau_now: float) -> float:
        """Windows after ``windows`` until source ``s``'s target reaches ``level`` (both less :attr:`base`)."""
        w = self.weights[k][s]
        if w > 0:
            t = (level - tau_now) / w
            if k + 1 == len(self.starts) or t <= self.starts[k + 1] - windows:
                return t
            if self.weights[k + 1][s] == 0 and level - self.taus[k + 1][s] <= PAUSE_SLACK - self.delta:
                return float(self.starts[k + 1] - windows)  # nearly due when it pauses: due by the pause
        for j in range(k + 1, len(self.starts)):  # paused or slow now: walk the phases ahead
            w = self.weights[j][s]
            if w > 0:
                t = (self.starts[j] - windows) + (level - self.taus[j][s]) / w
                if j + 1 == len(self.starts) or t <= self.starts[j + 1] - windows:
                    return t
        return math.inf

    def take(self, counts: Sequence[int], windows: int, room: Sequence[int | None] | None = None) -> list[int] | None:
        """Windows of each source in the step that starts after ``windows`` windows.

        ``room``: the most each source may take (``None``: any; repetition caps, see
        :mod:`streamtok.mixture.caps`); a source short of room gives its share to the others
        by due time. ``None`` when the sources with a positive weight and room cannot fill it.
        """
        k = self.segment(windows)
        now, end = self.tau(k, windows), self.tau(k, windows + self.b)
        w, d, n = self.weights[k], self.delta, self.n
        counts = [c - b for c, b in zip(counts, self.base)]
        take = [
            max(0, math.floor(end[s] - counts[s] + 1 - d)) if w[s] > 0 else 0 for s in range(n)
        ]
        if room is not None:
            take = [t if r is None else min(t, r) for t, r in zip(take, room)]
        extra = sum(take) - self.b
        while extra > 0:  # drop the released units due last
            s = max(
                (s for s in range(n) if take[s]),
                key=lambda s: (self.due(s, counts[s] + take[s] - d, k, windows, now[s]), s),
            )
            take[s] -= 1
            extra -= 1
        while extra < 0:  # a paused source was behind, or one ran out of room: take the units due next
            open_ = [s for s in range(n) if w[s] > 0 and (room is None or room[s] is None or take[s] < room[s])]
            if not open_:
                return None
            s = min(open_, key=lambda s: (self.due(s, counts[s] + take[s] + 1 - d, k, windows, now[s]), s))
            take[s] += 1
            extra += 1
        return take

    def order_keys(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tau at each step's start, weights)`` for steps starting after ``windows`` windows, as
        ``(steps, S)`` arrays: unit ``j`` of ``s`` is due at ``(C-base+j-d - tau)/w``. Each target
        is ``tau + w * span`` in the same order of operations as :meth:`tau` (the same floats)."""
        starts, weights, taus = self._arrays
        k = np.searchsorted(starts, windows, side="right") - 1
        span = (windows - starts[k]).astype(np.float64)
        return taus[k] + weights[k] * span[:, None], weights[k]
