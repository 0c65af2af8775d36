"""Repetition caps: ``max_epochs={name: x}`` stops a source after ``x`` of its epochs.

As OLMo-core's ``max_repetition_factor``: a small source with a big weight would otherwise
repeat without bound. Source ``s`` with ``n_s`` windows an epoch reads at most
``cap_s = floor(x * n_s)`` windows per pass (``x`` may be fractional; a product within 1e-9
of a whole number is that number, so 0.29 of 100 windows is 29, not 28), counted from where it
stood when the pass began: its windows ``[from_s, from_s + cap_s)`` of its own order, each
exactly once per whole epoch, never one more. A stream (``epochs=None``) is one pass, from
0; each pass of a finite mixture begins with every source at an epoch start, so a pass reads
epochs ``[e, e + x)`` of each capped source.

The rule, a pure function of the position (step, windows, counts, anchor, the pass's
limits): a source is *out* once its count reaches its limit ``from_s + cap_s``. The step
that reaches it gives the source only its remaining windows; the rest of that step goes to
the other sources with a positive weight by the schedule's own earliest-deadline rule (as
the units of a source that was behind when it paused). From the next step on, the out
sources' weights are removed and the others' renormalised, and the targets are re-anchored
at the counts then (as a resume with new weights is): the proportions of the sources left
are exact from that step on. A step that cannot be filled by the sources left with a
positive weight (every such source is out, or out within the step) is not taken: the pass
ends before it, the partial step dropped, as one source drops its partial last step. A
finite mixture's primary is capped by ending the pass: its end is ``min(epochs, x)`` of its
epochs, and the pass ends before the step that would pass it.

Cost: O(sources) per step on top of the schedule's; a re-anchor builds a new
:class:`~streamtok.mixture.schedule.Timeline` (O(phases x sources)), at most once per source
and pass.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .schedule import Anchor, Timeline

Phases = Sequence[tuple[int, tuple[float, ...]]]
NEVER = 1 << 53  # windows no count reaches (a saved count beyond this is refused as corrupt)
MaxEpochs = Mapping[str, float]


def parse_max_epochs(max_epochs: MaxEpochs | None, names: Sequence[str], sizes: Sequence[int]) -> tuple[int | None, ...]:
    """Windows per pass each source may read (``floor(x * n)``, in source order; ``None``: uncapped).

    Args:
        max_epochs: ``{name: x}``, ``x`` a positive number of epochs (fractions allowed); ``None``: no caps.
        names: the sources, in order.
        sizes: their windows per epoch.

    Raises:
        ConfigError: not a mapping, an unknown name, an ``x`` that is not a finite number
            above 0, or one that leaves the source less than one window.
    """
    if max_epochs is None:
        return (None,) * len(names)
    if not isinstance(max_epochs, Mapping):
        raise ConfigError(f"max_epochs must be a mapping {{name: epochs}}, not {max_epochs!r}")
    unknown = sorted(map(str, set(max_epochs) - set(names)))
    if unknown:
        raise ConfigError(f"max_epochs names unknown source(s) {unknown}; sources are {sorted(names)}")
    caps: list[int | None] = []
    for name, size in zip(names, sizes):
        if name not in max_epochs:
            caps.append(None)
            continue
        x = max_epochs[name]
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x <= 0:
            raise ConfigError(f"max_epochs of source {name!r} must be a finite number of epochs > 0, not {x!r}")
        windows = int(x) * size if isinstance(x, numbers.Integral) else cap_windows(float(x), size)
        if windows >= NEVER:  # a cap no run reaches (counts stay below 2**53): no cap
            caps.append(None)
            continue
        if windows < 1:
            raise ConfigError(
                f"max_epochs of source {name!r} is {x!r} of its {size} windows an epoch: less than one "
                f"window; give at least 1/{size} or leave the source out of the mixture"
            )
        caps.append(windows)
    return tuple(caps)


def cap_windows(x: float, size: int) -> int:
    """``floor(x * size)``, a product within ``1e-9`` (relative) of a whole number taken as it: the
    float product of 0.29 and 100 is 28.999999999999996, and 1/3 of 300 in floats is not 100."""
    product = x * size
    if not math.isfinite(product) or product >= NEVER:
        return NEVER
    nearest = round(product)
    return int(nearest) if abs(product - nearest) <= 1e-9 * max(1.0, product) else math.floor(product)


def limits_from(caps: Sequence[int | None], start: Sequence[int]) -> tuple[int | None, ...]:
    """Each source's last count allowed in a pass that begins at counts ``start`` (``None``: uncapped)."""
    return tuple(None if c is None else s + c for c, s in zip(caps, start))


def out_at(counts: Sequence[int], limits: Sequence[int | None] | None) -> tuple[bool, ...]:
    """Which sources are out (reached their limit) at ``counts``."""
    if limits is None:
        return (False,) * len(counts)
    return tuple(lim is not None and c >= lim for c, lim in zip(counts, limits))


def live_phases(phases: Phases, out: Sequence[bool]) -> tuple[tuple[int, tuple[float, ...]], ...]:
    """The phases with the out sources' weights removed and the others' renormalised (a phase
    with no positive weight left is all zero: nothing can be read in it)."""
    if not any(out):
        return tuple(phases)
    result = []
    for step, weights in phases:
        kept = [0.0 if o else w for w, o in zip(weights, out)]
        total = sum(kept)
        result.append((step, tuple(w / total for w in kept) if total > 0 else tuple(kept)))
    return tuple(result)


class Course:
    """One pass's steps on the schedule with caps, from any position of it on.

    Args:
        phases: from :func:`~streamtok.mixture.schedule.parse_weights`.
        step_windows: windows per global step (batch size times world size).
        limits: each source's last count in this pass (:func:`limits_from`), ``None``: no caps.
        end: the primary's end count of a finite pass, ``None``: a stream.
        primary: the primary's index, if any.
    """

    def __init__(
        self, phases: Phases, step_windows: int, limits: Sequence[int | None] | None, end: int | None, primary: int | None,
    ):
        self.phases, self.b = phases, step_windows
        limits = None if limits is None or all(x is None for x in limits) else list(limits)
        if end is not None and primary is not None and limits is not None and limits[primary] is not None:
            end = min(end, limits[primary])  # a capped primary ends the pass: it is not renormalised away
            limits[primary] = None
        self.limits = None if limits is None or all(x is None for x in limits) else tuple(limits)
        self.end, self.primary = end, primary
        self._timelines: dict[tuple[Anchor, tuple[bool, ...]], Timeline] = {}

    def timeline(self, anchor: Anchor, counts: Sequence[int]) -> Timeline:
        """The schedule of the sources not out at ``counts``, integrated from ``anchor`` (kept for reuse)."""
        out = out_at(counts, self.limits)
        key = (anchor, out)
        tl = self._timelines.get(key)
        if tl is None:
            if len(self._timelines) > 8:  # a pass re-anchors at most once per source
                self._timelines.clear()
            tl = self._timelines[key] = Timeline(live_phases(self.phases, out), anchor, self.b)
        return tl

    def take(self, tl: Timeline, counts: Sequence[int], windows: int) -> list[int] | None:
        """Windows of each source in the step after ``windows``; ``None``: the pass ends before it."""
        if self.limits is None:
            take = tl.take(counts, windows)
            if self.end is None:
                return take
        else:
            room = [None if lim is None else max(0, lim - c) for c, lim in zip(counts, self.limits)]
            take = tl.take(counts, windows, room)
        if take is None or (self.end is not None and counts[self.primary] + take[self.primary] > self.end):
            return None
        return take

    def after(
        self, step: int, windows: int, counts: Sequence[int], take: Sequence[int], anchor: Anchor,
    ) -> tuple[list[int], Anchor]:
        """The counts and the anchor after global ``step`` (a source that ran out in it re-anchors the targets)."""
        new = [c + t for c, t in zip(counts, take)]
        if self.limits is not None and out_at(new, self.limits) != out_at(counts, self.limits):
            anchor = Anchor(step + 1, windows + self.b, tuple(float(c) for c in new))
        return new, anchor

    def steps(
        self, step: int, windows: int, counts: Sequence[int], anchor: Anchor,
    ) -> Iterator[tuple[Timeline, int, list[int], list[int]]]:
        """``(timeline, windows, counts, take)`` of every step of the pass from this position to its end."""
        counts = list(counts)
        tl = self.timeline(anchor, counts)
        while True:
            take = self.take(tl, counts, windows)
            if take is None:
                return
            yield tl, windows, counts, take
            counts, moved = self.after(step, windows, counts, take, anchor)
            step, windows = step + 1, windows + self.b
            if moved is not anchor:  # a source ran out: the others' schedule from here
                anchor, tl = moved, self.timeline(moved, counts)

    def endless(self, step: int) -> bool:
        """Whether the pass never ends from here: a stream in which, in every phase from ``step``
        on, some source without a cap has a positive weight (so every step can be filled)."""
        if self.end is not None:
            return False
        free = [lim is None for lim in self.limits] if self.limits is not None else [True] * len(self.phases[0][1])
        first = max(i for i, (s, _) in enumerate(self.phases) if s <= step)
        return all(any(f and w > 0 for f, w in zip(free, weights)) for _, weights in self.phases[first:])

    def length(self, step: int, windows: int, counts: Sequence[int], anchor: Anchor) -> int | None:
        """Steps of the pass from this position (simulated, O(steps)); ``None``: it never ends.

        A pass that is not endless now may become so once the phases without a free source
        are behind it, so that is asked again at each phase start.
        """
        if self.endless(step):
            return None
        starts, n = {s for s, _ in self.phases}, 0
        for _ in self.steps(step, windows, counts, anchor):
            n += 1
            if step + n in starts and self.endless(step + n):
                return None
        return n


def spec(max_epochs: MaxEpochs | None, names: Sequence[str]) -> dict[str, Any]:
    """``max_epochs`` as the state records it: ``{name: x}`` in source order, numbers as floats or ints."""
    if not max_epochs:
        return {}
    plain = {n: max_epochs[n] for n in names if n in max_epochs}
    return {n: int(x) if isinstance(x, numbers.Integral) else float(x) for n, x in plain.items()}
