"""Mixture: batches whose rows come from several weighted sources, in an exact schedule.

Each source keeps its own order, exactly as a :class:`WindowSampler` of its own would (its
seed derived from the mixture seed and its name): window ``k`` of a source is sample
``k % n`` of its epoch ``k // n``. Which source each slot of a global step reads comes from
:mod:`streamtok.mixture.schedule` (O(sources) per step; counts within one step of the integrated
weights), and within a step the slots are ordered by their units' due times, so the sources
interleave over the ranks. The position is the step, the windows so far and one count per
source; it resumes under any ``num_workers``, world size, batch size, weights or set of
sources.

A pass (one ``for batch in loader``) of a finite mixture (``primary`` and ``epochs``) is what
a DataLoader epoch is: it begins with every source at the start of an epoch of its own and
ends before the step that would take the primary past ``epochs`` of its epochs (the primary's
few windows short of that end, less than one step's share, are dropped, as a single source
drops its partial last step). So every pass of a validation mixture in ``sequential`` mode
reads the same batches, and each pass of a shuffled one trains ``epochs`` new epochs of the
primary. A new pass, after one that ended or was left, moves each source to its next epoch
start (a source already at one stays) and re-anchors the targets there (proportions hold
from the pass's start; the step count and the weight schedule go on). A stream
(``epochs=None``) has no passes to end: iterating it again continues where it stood. As for
StatefulDataLoader, a state saved after the last batch of a pass, before the loop saw the
end, resumes into an empty pass; one saved after it resumes into the next pass.

Repetition caps (``max_epochs``, :mod:`streamtok.mixture.caps`) count per pass: a source
that read its cap is out, its weight renormalised away from the next step; a stream whose
caps leave no source to read ends.

All sources are read through one :class:`MemmapReader` over all their shards
(source ``s`` holds global tokens ``[base_s, base_s + n_s)``), so the loader's gather, page
hints and metrics work unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._order import hash_key
from .._position import read_mixture
from ..errors import ConfigError
from ..reader import MemmapReader
from ..sampler import CHUNK_STEPS, StepShape, WindowSampler, resolve_rank
from .caps import Course, MaxEpochs, limits_from, parse_max_epochs
from .caps import spec as caps_spec
from .schedule import Anchor, Timeline, Weights, parse_weights

# A string, so that a single-source loader given this state refuses it by its version.
STATE_VERSION = "mixture/1"
log = logging.getLogger("streamtok.mixture.sampler")


@dataclass(frozen=True)
class MixturePosition:
    """Where a pass begins: step, windows so far, per-source counts, the primary's end count, the anchor,
    and each source's last count under its repetition cap (``None``: no caps).

    The anchor travels with the position: persistent workers keep the sampler they started
    with, and build the pass's schedule from it.
    """

    step: int
    windows: int
    counts: tuple[int, ...]
    end: int | None
    anchor: Anchor
    limits: tuple[int | None, ...] | None = None


def _source_seed(seed: int, name: str) -> int:
    return hash_key(seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


class MixtureSampler(StepShape):
    """Window starts (in the mixture's joint token space) for one rank, step by step.

    Args:
        readers: one :class:`MemmapReader` per source name.
        weights: ``{name: weight}`` or ``[(step, {name: weight}), ...]`` sorted from step 0.
        seq_len, mode, seed, batch_size, rank, world_size: as for :class:`WindowSampler`.
        epochs: ``None`` streams; a number counts epochs of the ``primary`` source.
        primary: the source whose epochs ``epochs`` counts.
        max_epochs: ``{name: x}``: source ``name`` reads at most ``floor(x * its windows an
            epoch)`` windows per pass, then its share goes to the others (see
            :mod:`streamtok.mixture.caps`).

    Raises:
        ConfigError: bad weights or settings (see :func:`streamtok.mixture.schedule.parse_weights`),
            ``epochs`` without ``primary``, a source too short for one window, or bad
            ``max_epochs`` (see :func:`streamtok.mixture.caps.parse_max_epochs`).
    """

    def __init__(
        self, readers: Mapping[str, MemmapReader], weights: Weights, *, seq_len: int, mode: str = "shuffle",
        seed: int = 0, epochs: int | None = None, primary: str | None = None, batch_size: int = 1,
        rank: int | None = None, world_size: int | None = None, max_epochs: MaxEpochs | None = None,
    ):
        if not readers:
            raise ConfigError("a mixture needs at least one source")
        self.names = tuple(readers)
        if epochs is not None and primary is None:
            raise ConfigError(f"epochs={epochs!r} with a mixture needs primary=<source name> (whose epochs to count), or epochs=None to stream")
        if primary is not None and primary not in readers:
            raise ConfigError(f"primary={primary!r} is not a source; sources are {sorted(readers)}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ConfigError(f"epochs must be a positive integer or None, not {epochs!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
        self.phases = parse_weights(weights, self.names)
        if epochs is not None and self.phases[-1][1][self.names.index(primary)] == 0:
            raise ConfigError(
                f"epochs={epochs} counts epochs of primary={primary!r}, whose last weight is 0: the pass "
                "would never end; give it a weight or use epochs=None"
            )
        self.samplers: list[WindowSampler] = []
        for name, reader in readers.items():
            try:
                self.samplers.append(WindowSampler(reader, seq_len, mode=mode, seed=_source_seed(seed, name), epochs=None, world_size=1, rank=0))
            except ConfigError as e:
                raise ConfigError(f"source {name!r}: {e}") from None
        self.sizes = [s.n_samples for s in self.samplers]
        self.bases = np.cumsum([0] + [r.n_tokens for r in readers.values()])[:-1].astype(np.int64)
        self.seq_len, self.mode, self.seed, self.epochs, self.primary = int(seq_len), mode, int(seed), epochs, primary
        self.batch_size = int(batch_size)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self._p = None if primary is None else self.names.index(primary)
        self.step, self.windows, self.counts = 0, 0, [0] * len(self.names)
        self.end: int | None = None if epochs is None else epochs * self.sizes[self._p]
        self.anchor = Anchor(0, 0, (0.0,) * len(self.names))
        self.caps = parse_max_epochs(max_epochs, self.names, self.sizes)
        self.max_epochs = caps_spec(max_epochs, self.names)
        self.cap_from = [0] * len(self.names)  # where each source's cap counts from: its count at the pass start
        self.limits = self._limits(self.cap_from)
        self.course = Course(self.phases, self.step_samples, self.limits, self.end, self._p)
        self.timeline = self.course.timeline(self.anchor, self.counts)
        # The step where a loaded state changed the weights, sources or step size: the run
        # before it followed another schedule (streamtok.locate then starts from here).
        self.resumed_at: int | None = None
        self._continue = True  # the next pass continues from the position (fresh or loaded)
        self.pass_ended = False  # the consumer saw the current pass end (set by the loader)
        if self.course.take(self.timeline, self.counts, self.windows) is None:
            if Course(self.phases, self.step_samples, None, self.end, self._p).take(self.timeline, self.counts, 0) is None:
                raise ConfigError(
                    f"epochs={epochs} of primary={primary!r} ({self.end} windows) cannot fill its share of one "
                    f"global step of {self.step_samples} windows; use more epochs, a smaller batch or more data"
                )
            raise ConfigError(
                f"max_epochs={max_epochs!r} leaves too few windows for the first global step of "
                f"{self.step_samples} windows (caps in windows: {dict(zip(self.names, self.caps))}); "
                "raise the caps, use a smaller batch or more data"
            )

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch of the primary source at its first weight (all sources' windows without one)."""
        share = self.phases[0][1][self._p] if self._p is not None else 1.0
        n = self.sizes[self._p] if self._p is not None else sum(self.sizes)
        return max(1, int(n / max(share, 1e-9)) // self.step_samples)

    @property
    def epoch(self) -> int:
        """The primary source's epoch (0 without one)."""
        return 0 if self._p is None else self.counts[self._p] // self.sizes[self._p]

    @property
    def offset(self) -> int:
        """Windows so far over all ranks (the primary's within its epoch, with one)."""
        return self.windows if self._p is None else self.counts[self._p] % self.sizes[self._p]

    def windows_by_source(self) -> dict[str, int]:
        """Windows each source has given so far (all ranks), in source order."""
        return dict(zip(self.names, self.counts))

    def source_epochs(self) -> dict[str, int]:
        """Each source's current epoch (its windows so far over its windows per epoch)."""
        return {n: c // size for n, c, size in zip(self.names, self.counts, self.sizes)}

    def epochs_by_source(self) -> dict[str, float]:
        """Each source's epochs so far, all ranks: its windows over its windows per epoch (1.5: one and a half)."""
        return {n: c / size for n, c, size in zip(self.names, self.counts, self.sizes)}

    def _limits(self, cap_from: Sequence[int]) -> tuple[int | None, ...] | None:
        """Each source's last count in a pass whose caps count from ``cap_from`` (``None``: no caps)."""
        return limits_from(self.caps, cap_from) if any(c is not None for c in self.caps) else None

    def targets(self) -> dict[str, float]:
        """Each source's target count now: the weights integrated since the anchor."""
        return dict(zip(self.names, self.timeline.targets(self.windows)))

    def report(self) -> list[dict[str, Any]]:
        """One plain dict per source for metrics and the monitor's per-source line.

        Keys: ``name``, ``windows`` and ``tokens`` (``windows * seq_len``, as the loader counts
        tokens) so far over all ranks, ``epoch`` (the source's), ``weight`` (now, normalised;
        0 once capped out), ``target`` (the share of windows the schedule asked for so far),
        ``share`` (the share realised) and ``max_epochs`` (its cap, ``None``: uncapped); shares
        are ``None`` before the first step.
        """
        return self.report_at(self.windows, self.counts)

    def report_at(self, windows: int, counts: Sequence[int]) -> list[dict[str, Any]]:
        """:meth:`report` at another position of this run: ``windows`` so far and per-source ``counts``.

        Used by the metrics for the position the training loop holds behind a prefetch thread.
        """
        k = self.timeline.segment(windows)
        tau, weights, total = self.timeline.targets(windows), self.timeline.weights[k], windows
        return [
            {
                "name": name, "windows": c, "tokens": c * self.seq_len, "epoch": c // size, "weight": w,
                "target": t / total if total else None, "share": c / total if total else None,
                "max_epochs": self.max_epochs.get(name),
            }
            for name, c, size, w, t in zip(self.names, counts, self.sizes, weights, tau)
        ]

    # -- passes -----------------------------------------------------------------------------
    def next_pass(self) -> MixturePosition:
        """Where the next pass would start (see the module's docstring); changes nothing.

        Here if fresh, loaded (a state saved at its pass's end gives an empty pass) or
        streaming; else a new pass: every source at its next epoch start, the targets
        re-anchored there, and the end ``epochs`` primary epochs on.
        """
        if self._continue or self.end is None:
            return MixturePosition(self.step, self.windows, tuple(self.counts), self.end, self.anchor, self.limits)
        counts = tuple(-(-c // n) * n for c, n in zip(self.counts, self.sizes))
        end = counts[self._p] + self.epochs * self.sizes[self._p]
        anchor = Anchor(self.step, self.windows, tuple(float(c) for c in counts))
        return MixturePosition(self.step, self.windows, counts, end, anchor, self._limits(counts))

    def begin_pass(self) -> MixturePosition:
        """Start the next pass (see :meth:`next_pass`) and return where it begins."""
        new = not (self._continue or self.end is None)
        start = self.next_pass()
        self.course = self._course(start)
        self.counts, self.end, self.anchor, self.limits = list(start.counts), start.end, start.anchor, start.limits
        if new:
            self.cap_from = list(start.counts)
        self.timeline = self.course.timeline(self.anchor, self.counts)
        self._continue = self.pass_ended = False
        return start

    def _course(self, start: MixturePosition) -> Course:
        """The steps of the pass from ``start`` (this pass's own, or another's: a worker's)."""
        if start.limits == self.limits and start.end == self.end:
            return self.course
        return Course(self.phases, self.step_samples, start.limits, start.end, self._p)

    def advance(self) -> None:
        """Record that the consumer received one more step."""
        take = self.course.take(self.timeline, self.counts, self.windows)
        self.counts, anchor = self.course.after(self.step, self.windows, self.counts, take, self.anchor)
        self.step, self.windows = self.step + 1, self.windows + self.step_samples
        if anchor is not self.anchor:  # a source ran out: the others' schedule from here
            self.anchor, self.timeline = anchor, self.course.timeline(anchor, self.counts)

    def pass_steps(self, start: MixturePosition) -> int | None:
        """Steps of the pass from ``start`` (simulated, O(steps), ~10 µs each); ``None``: endless.

        A finite pass ends: ``__init__`` refuses a primary source whose last weight is 0. A
        stream ends when its caps leave no source to read (see :meth:`Course.length`).
        """
        return self._course(start).length(start.step, start.windows, start.counts, start.anchor)

    # -- the order ----------------------------------------------------------------------------
    def iter_steps(self, start: MixturePosition, worker_id: int = 0, num_workers: int = 1) -> Iterator[np.ndarray]:
        """Start arrays of the steps ``j`` of a pass with ``j % num_workers == worker_id``."""
        chunk: list[tuple[int, list[int], list[int]]] = []
        tl = None
        steps = self._course(start).steps(start.step, start.windows, start.counts, start.anchor)
        for j, (step_tl, windows, counts, take) in enumerate(steps):
            if chunk and (len(chunk) == CHUNK_STEPS or step_tl is not tl):  # a chunk is one timeline's
                yield from self.step_starts(chunk, tl)
                chunk = []
            tl = step_tl
            if j % num_workers == worker_id:
                chunk.append((windows, counts, take))
        if chunk:
            yield from self.step_starts(chunk, tl)

    def step_starts(self, chunk: list[tuple[int, list[int], list[int]]], tl: Timeline | None = None) -> np.ndarray:
        """This rank's ``(steps, B)`` starts for steps given as ``(windows, counts, take)`` of
        timeline ``tl`` (default: the sampler's current one)."""
        tl = self.timeline if tl is None else tl
        b, n_src, d = self.step_samples, len(self.names), tl.delta
        takes = np.array([t for _, _, t in chunk], dtype=np.int64)  # (steps, S)
        counts = np.array([c for _, c, _ in chunk], dtype=np.int64)
        keys = [tl.order_keys(w) for w, _, _ in chunk]
        tau = np.array([k[0] for k in keys])
        rate = np.array([k[1] for k in keys])
        flat = takes.reshape(-1)
        src = np.repeat(np.tile(np.arange(n_src), len(chunk)), flat)
        step = np.repeat(np.arange(len(chunk)), takes.sum(1))
        first = np.repeat(np.cumsum(flat) - flat, flat)
        unit = np.arange(len(src)) - first  # 0-based unit within (step, source)
        k_src = counts[step, src] + unit  # the source's window number
        k_rel = k_src - np.asarray(tl.base, dtype=np.int64)[src]  # as the timeline counts it
        with np.errstate(divide="ignore", invalid="ignore"):
            due = (k_rel + 1 - d - tau[step, src]) / rate[step, src]
        order = np.lexsort((src, due, step))
        mine = order.reshape(len(chunk), b)[:, self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        s_of, k_of = src[mine], k_src[mine]
        out = np.empty(mine.shape, dtype=np.int64)
        for s in np.unique(s_of).tolist():
            sel = s_of == s
            ks = k_of[sel]
            epochs, idx = ks // self.sizes[s], ks % self.sizes[s]
            starts = np.empty(len(ks), dtype=np.int64)
            for e in np.unique(epochs).tolist():
                at = epochs == e
                starts[at] = self.samplers[s].starts(e, idx[at])
            out[sel] = starts + self.bases[s]
        return out

    # -- state ----------------------------------------------------------------------------------
    def _spec(self) -> list[list[Any]]:
        return [[s, dict(zip(self.names, w))] for s, w in self.phases]

    def state_dict(self) -> dict[str, Any]:
        """The position (step, windows, per-source counts and fingerprints, anchor, where the caps
        count from), JSON-serialisable."""
        return {
            "version": STATE_VERSION, "kind": "mixture",
            "config": {"mode": self.mode, "seed": self.seed, "seq_len": self.seq_len},
            "step": self.step, "windows": self.windows, "step_samples": self.step_samples,
            "epoch": self.epoch, "offset": self.offset, "end": self.end, "primary": self.primary,
            "sources": {
                n: {"data": s.source.fingerprint, "n_tokens": s.source.n_tokens, "windows": c}
                for n, s, c in zip(self.names, self.samplers, self.counts)
            },
            "anchor": {"step": self.anchor.step, "windows": self.anchor.windows, "targets": dict(zip(self.names, self.anchor.targets))},
            "schedule": self._spec(),
            "max_epochs": dict(self.max_epochs), "cap_from": dict(zip(self.names, self.cap_from)),
            "batch_size": self.batch_size, "world_size": self.world_size, "rank": self.rank,
            "pass_ended": self.pass_ended,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; other weights, caps, step sizes or sources re-anchor the schedule.

        A state saved before repetition caps (no ``cap_from``) counts a finite mixture's caps
        from each source's current epoch start, a stream's from 0.

        The whole state is checked (:func:`streamtok._position.read_mixture`) before anything changes.

        Raises:
            StateMismatchError: not a mixture state, another mode/seed/seq_len, a source
                name that now holds other data, or a corrupt state (named key).
        """
        saved = read_mixture(
            state, {"mode": self.mode, "seed": self.seed, "seq_len": self.seq_len}, version=STATE_VERSION,
            fingerprints={n: s.source.fingerprint for n, s in zip(self.names, self.samplers)},
        )
        counts = [saved.counts.get(n, 0) for n in self.names]
        same_pass = self.epochs is None or (saved.end is not None and saved.primary == self.primary)
        if self.epochs is None:
            end = None
        elif same_pass:
            end = saved.end
        else:
            size = self.sizes[self._p]
            end = (counts[self._p] // size + self.epochs) * size
        if saved.cap_from is not None and same_pass:
            cap_from = [saved.cap_from.get(n, 0) for n in self.names]
        else:  # an older state, or a new pass: the caps count from each source's epoch start
            cap_from = [0 if self.epochs is None else c // n * n for c, n in zip(counts, self.sizes)]
        limits = self._limits(cap_from)
        course = Course(self.phases, self.step_samples, limits, end, self._p)
        saved_caps = saved.max_epochs or {}
        # The saved anchor holds under the same caps counted from the same pass start.
        same_caps = saved_caps == self.max_epochs and (limits is None or (saved.cap_from is not None and same_pass))
        resumed_at = None
        if state["schedule"] == self._spec() and sorted(saved.counts) == sorted(self.names) and same_caps:
            saved_anchor = Anchor(saved.anchor_step, saved.anchor_windows, tuple(saved.targets[n] for n in self.names))
            if saved.step_samples == self.step_samples:
                anchor = saved_anchor
            else:  # another batch or world size: the same targets, integrated on from here
                old = Course(self.phases, saved.step_samples, limits, end, self._p).timeline(saved_anchor, counts)
                anchor = Anchor(saved.step, saved.windows, old.targets(saved.windows))
                resumed_at = saved.step
        else:
            anchor = Anchor(saved.step, saved.windows, tuple(float(c) for c in counts))
            resumed_at = saved.step
            log.warning(
                "streamtok mixture: resuming at step %d with other weights, sources or max_epochs (saved %s, now %s); "
                "each source continues at its own position", saved.step,
                _shown(state["schedule"], saved_caps), _shown(self._spec(), self.max_epochs),
            )
        self.step, self.windows, self.counts, self.anchor, self.end = saved.step, saved.windows, counts, anchor, end
        self.cap_from, self.limits, self.course = cap_from, limits, course
        self.timeline, self.resumed_at = course.timeline(anchor, counts), resumed_at
        ended = bool(saved.pass_ended)  # None: a state saved before passes were exact
        self.pass_ended = ended
        self._continue = not ended


def _shown(spec: Any, max_epochs: Mapping[str, float] | None = None) -> str:
    """A weight schedule for a log line: ``step 0: web 0.6, code 0.4; step 300: ...``, then the caps if any.

    Normalised weights are floats such as 0.6000000000000001; four significant digits say
    what was asked for. A malformed saved schedule is shown as it is.
    """
    caps = f"; max_epochs {dict(max_epochs)}" if max_epochs else ""
    try:
        return "; ".join(
            f"step {step}: " + ", ".join(f"{name} {float(w):.4g}" for name, w in weights.items()) for step, weights in spec
        ) + caps
    except (TypeError, ValueError, AttributeError):
        return repr(spec) + caps
