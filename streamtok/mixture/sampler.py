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

With ``documents`` a source's unit is that mode's row instead of a window
(:mod:`streamtok.mixture.units`: ``"bos"`` rows from its document starts, ``"pack"`` its
packed rows numbered across its epochs), each built from the source's own documents; the
schedule, the counts, the caps (``"mask"``: windows, ``"bos"``: rows, ``"pack"``: packed
rows, a cap of ``x`` epochs being the rows of those epochs, found by packing them) and the
state are the same, the state adding each source's ``bos_id`` (and for
``"pack"`` a mark that spares a resume the packing before it).

The pass logic and the settings check are the shared sampler contract's
(:class:`streamtok.sampler.StepSampler`); this module holds the mixture's order and position.

All sources are read through one :class:`MemmapReader` over all their shards
(source ``s`` holds global tokens ``[base_s, base_s + n_s)``), so the loader's gather, page
hints and metrics work unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._order import WINDOW_MODES, hash_key
from .._position import read_mixture
from ..errors import ConfigError
from ..reader import MemmapReader
from ..sampler import CHUNK_STEPS, StepSampler
from .caps import Course, MaxEpochs, cap_windows, limits_from, parse_max_epochs
from .caps import spec as caps_spec
from .schedule import Anchor, Timeline, Weights, parse_weights
from .units import check_source_state, need_index, source_order, source_state

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


class MixtureSampler(StepSampler):
    """Window starts (in the mixture's joint token space) for one rank, step by step.

    Args:
        readers: one :class:`MemmapReader` per source name.
        weights: ``{name: weight}`` or ``[(step, {name: weight}), ...]`` sorted from step 0.
        seq_len, mode, seed, batch_size, rank, world_size: as for :class:`WindowSampler`.
        epochs: ``None`` streams; a number counts epochs of the ``primary`` source.
        primary: the source whose epochs ``epochs`` counts.
        max_epochs: ``{name: x}``: source ``name`` reads at most ``floor(x * its windows an
            epoch)`` windows per pass, then its share goes to the others (see
            :mod:`streamtok.mixture.caps`); the unit counted is the ``documents`` mode's.
        documents: what a source's unit is (:mod:`streamtok.mixture.units`): ``"stream"`` and
            ``"mask"`` windows, ``"bos"`` rows from document starts, ``"pack"`` packed rows
            (then each step is a plan of pieces, as :class:`~streamtok.documents.pack.PackSampler`'s).
        indexes: each source's :class:`~streamtok.documents.index.DocumentIndex` (``"bos"``, ``"pack"``).
        block_docs: documents per packed block (``"pack"``).

    Raises:
        ConfigError: bad weights or settings (see :func:`streamtok.mixture.schedule.parse_weights`),
            ``epochs`` without ``primary``, a source too short for one window, or bad
            ``max_epochs`` (see :func:`streamtok.mixture.caps.parse_max_epochs`; with ``"pack"`` a
            cap of ``x`` epochs is the rows of those epochs of the source, see :meth:`_packed_limit`).
    """

    MODES = WINDOW_MODES
    # While a deque: each chunk of steps iter_steps computes is appended (the document collator
    # takes the boundaries' plans from here without workers, as from RecordedStarts).
    record: deque[Any] | None = None

    def __init__(
        self, readers: Mapping[str, MemmapReader], weights: Weights, *, seq_len: int, mode: str = "shuffle",
        seed: int = 0, epochs: int | None = None, primary: str | None = None, batch_size: int = 1,
        rank: int | None = None, world_size: int | None = None, max_epochs: MaxEpochs | None = None,
        documents: str = "stream", indexes: Mapping[str, Any] | None = None, block_docs: int = 1000,
    ):
        if not readers:
            raise ConfigError("a mixture needs at least one source")
        self.configure(
            seq_len=seq_len, batch_size=batch_size, mode=mode, seed=seed, epochs=epochs, rank=rank, world_size=world_size,
        )
        self.names = tuple(readers)
        if epochs is not None and primary is None:
            raise ConfigError(f"epochs={epochs!r} with a mixture needs primary=<source name> (whose epochs to count), or epochs=None to stream")
        if primary is not None and primary not in readers:
            raise ConfigError(f"primary={primary!r} is not a source; sources are {sorted(readers)}")
        if need_index(documents) and documents != "mask" and indexes is None:
            raise ConfigError(f"documents={documents!r} in a mixture needs each source's document index (indexes=)")
        self.documents, self.block_docs = documents, block_docs
        self.phases = parse_weights(weights, self.names)
        if epochs is not None and self.phases[-1][1][self.names.index(primary)] == 0:
            raise ConfigError(
                f"epochs={epochs} counts epochs of primary={primary!r}, whose last weight is 0: the pass "
                "would never end; give it a weight or use epochs=None"
            )
        self.samplers: list[Any] = []  # each source's order of units (streamtok.mixture.units)
        for name, reader in readers.items():
            try:
                self.samplers.append(source_order(
                    reader, documents=documents, seq_len=self.seq_len, mode=self.mode, seed=_source_seed(self.seed, name),
                    index=None if indexes is None else indexes.get(name), block_docs=block_docs,
                ))
            except ConfigError as e:
                raise ConfigError(f"source {name!r}: {e}") from None
        self.sizes = [s.n_samples for s in self.samplers]
        # The token each source's documents are split at (recorded in the state, checked at resume).
        self.boundaries = [
            None if documents == "stream" or indexes is None or indexes.get(n) is None else indexes[n].boundary
            for n in self.names
        ]
        self.bases = np.cumsum([0] + [r.n_tokens for r in readers.values()])[:-1].astype(np.int64)
        self.primary = primary
        self._p = None if primary is None else self.names.index(primary)
        self.step, self.windows, self.counts = 0, 0, [0] * len(self.names)
        self.end: int | None = None if self.epochs is None else self.epoch_start(self._p, self.epochs)
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
        # (timeline, windows, counts, take) of steps iter_steps computed here: see _known_take.
        self._known: deque[tuple[Timeline, int, list[int], list[int]]] = deque(maxlen=4 * CHUNK_STEPS)
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
        return 0 if self._p is None else self.epoch_of(self._p, self.counts[self._p])

    @property
    def offset(self) -> int:
        """Windows so far over all ranks (the primary's within its epoch, with one)."""
        if self._p is None:
            return self.windows
        count = self.counts[self._p]
        return count - self.epoch_start(self._p, self.epoch_of(self._p, count))

    def windows_by_source(self) -> dict[str, int]:
        """Windows each source has given so far (all ranks), in source order."""
        return dict(zip(self.names, self.counts))

    def source_epochs(self) -> dict[str, int]:
        """Each source's current epoch (its windows so far over its windows per epoch)."""
        return {n: self.epoch_of(s, c) for s, (n, c) in enumerate(zip(self.names, self.counts))}

    def epochs_by_source(self) -> dict[str, float]:
        """Each source's epochs so far, all ranks, exact: its units over its units per epoch (1.5: one and a half).

        Packed rows (``documents="pack"``): ``e + (rows into epoch e) / (rows of epoch e)``, see
        :meth:`epochs_of`.
        """
        return {n: self.epochs_of(s, c) for s, (n, c) in enumerate(zip(self.names, self.counts))}

    def epochs_of(self, source: int, count: int) -> float:
        """The exact epochs of source number ``source`` after ``count`` of its units.

        Windows and document-start rows: ``count / n`` (``n`` units an epoch). Packed rows: an
        epoch's row count is a pure function of ``(seed, epoch)`` known by packing the epoch,
        so the source's epoch ``e`` and its first row come from the table of rows before each
        block (:class:`~streamtok.documents.rows.PackedRowIndex`), and its row count from
        packing it once: the first call in an epoch packs its blocks not yet packed (as a
        cap does), later ones read the table (O(log blocks)). One epoch read whole is ``1.0``.
        """
        if self.documents != "pack":
            return count / self.sizes[source]
        epoch = self.epoch_of(source, count)
        start = self.epoch_start(source, epoch)
        rows = self.epoch_start(source, epoch + 1) - start
        return epoch + (count - start) / rows

    def epoch_of(self, source: int, count: int) -> int:
        """The epoch of unit ``count`` of source number ``source`` (packed rows: packs up to it)."""
        if self.documents == "pack":
            return self.samplers[source].epoch_of(count)
        return count // self.sizes[source]

    def epoch_start(self, source: int, epoch: int) -> int:
        """Units of source number ``source`` before its ``epoch`` (packed rows: packs up to it)."""
        if self.documents == "pack":
            return self.samplers[source].epoch_start(epoch)
        return epoch * self.sizes[source]

    def _next_epoch_start(self, source: int, count: int) -> int:
        epoch = self.epoch_of(source, count)
        return count if count == self.epoch_start(source, epoch) else self.epoch_start(source, epoch + 1)

    def _limits(self, cap_from: Sequence[int]) -> tuple[int | None, ...] | None:
        """Each source's last count in a pass whose caps count from ``cap_from`` (``None``: no caps)."""
        if not any(c is not None for c in self.caps):
            return None
        if self.documents != "pack":
            return limits_from(self.caps, cap_from)
        return tuple(
            None if cap is None else self._packed_limit(s, start)
            for s, (cap, start) in enumerate(zip(self.caps, cap_from))
        )

    def _packed_limit(self, source: int, start: int) -> int:
        """Packed rows: the last count of a source capped at ``x`` epochs from count ``start``.

        An epoch's rows are known only by packing it, so ``x`` epochs are counted in the
        source's own epochs: the rows of the ``floor(x)`` whole epochs from ``start``'s epoch,
        then ``floor(frac(x) * rows of the next epoch)`` (as ``floor(x * n)`` for windows,
        a product within 1e-9 of a whole number taken as it). Packs those epochs once per pass.
        """
        x = self.max_epochs[self.names[source]]
        whole = math.floor(x)
        first = self.epoch_of(source, start)
        base = self.epoch_start(source, first)
        end = self.epoch_start(source, first + whole)
        if x > whole:
            end += cap_windows(float(x) - whole, self.epoch_start(source, first + whole + 1) - end)
        return start + (end - base)

    def targets(self) -> dict[str, float]:
        """Each source's target count now: the weights integrated since the anchor."""
        return dict(zip(self.names, self.timeline.targets(self.windows)))

    def report(self) -> list[dict[str, Any]]:
        """One plain dict per source for metrics and the monitor's per-source line.

        Keys: ``name``, ``windows`` and ``tokens`` (``windows * seq_len``, as the loader counts
        tokens) so far over all ranks, ``epoch`` (the source's, exact: packed rows' too, from the
        table of their blocks' rows, see :meth:`epoch_of`), ``weight`` (now, normalised;
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
                "name": name, "windows": c, "tokens": c * self.seq_len,
                "epoch": self.epoch_of(s, c), "weight": w,
                "target": t / total if total else None, "share": c / total if total else None,
                "max_epochs": self.max_epochs.get(name),
            }
            for s, (name, c, w, t) in enumerate(zip(self.names, counts, weights, tau))
        ]

    # -- passes -----------------------------------------------------------------------------
    def here(self) -> MixturePosition:
        return MixturePosition(self.step, self.windows, tuple(self.counts), self.end, self.anchor, self.limits)

    def following(self) -> MixturePosition:
        """A new pass (see the module's docstring): every source at its next epoch start, the
        targets re-anchored there, the end ``epochs`` primary epochs on, and the caps counted
        from there; a stream goes on here."""
        if self.end is None:
            return self.here()
        counts = tuple(self._next_epoch_start(s, c) for s, c in enumerate(self.counts))
        end = self.epoch_start(self._p, self.epoch_of(self._p, counts[self._p]) + self.epochs)
        anchor = Anchor(self.step, self.windows, tuple(float(c) for c in counts))
        return MixturePosition(self.step, self.windows, counts, end, anchor, self._limits(counts))

    def begin_pass(self) -> MixturePosition:
        """Start the next pass (see :meth:`next_pass`) and return where it begins; a new pass's
        caps count from its start."""
        new = not (self._continue or self.end is None)
        start = super().begin_pass()
        if new:
            self.cap_from = list(start.counts)
        return start

    def enter(self, start: MixturePosition) -> None:
        self._known.clear()
        self.course = self._course(start)
        self.counts, self.end, self.anchor, self.limits = list(start.counts), start.end, start.anchor, start.limits
        self.timeline = self.course.timeline(self.anchor, self.counts)

    def _course(self, start: MixturePosition) -> Course:
        """The steps of the pass from ``start`` (this pass's own, or another's: a worker's)."""
        if start.limits == self.limits and start.end == self.end:
            return self.course
        return Course(self.phases, self.step_samples, start.limits, start.end, self._p)

    def advance(self) -> None:
        """Record that the consumer received one more step."""
        take = self._known_take()
        if take is None:
            take = self.course.take(self.timeline, self.counts, self.windows)
        self.counts, anchor = self.course.after(self.step, self.windows, self.counts, take, self.anchor)
        self.step, self.windows = self.step + 1, self.windows + self.step_samples
        if anchor is not self.anchor:  # a source ran out: the others' schedule from here
            self.anchor, self.timeline = anchor, self.course.timeline(anchor, self.counts)

    def _known_take(self) -> list[int] | None:
        """The take of the step at the position, if this process's iter_steps computed it already.

        Without workers the loader's own iter_steps runs a chunk ahead of advance() in the same
        process (with workers, the document collator's walk does): reusing its takes halves the
        schedule's cost per step. An entry counts only for the same timeline, windows and counts
        (the caps' re-anchored timelines are the course's own objects, so identity holds).
        """
        known = self._known
        while known:
            tl, windows, counts, take = known[0]
            if windows > self.windows:
                return None
            known.popleft()
            if windows == self.windows and tl is self.timeline and counts == self.counts:
                return take
        return None

    def pass_steps(self, start: MixturePosition) -> int | None:
        """Steps of the pass from ``start`` (simulated, O(steps), ~10 µs each); ``None``: endless.

        A finite pass ends: ``__init__`` refuses a primary source whose last weight is 0. A
        stream ends when its caps leave no source to read (see :meth:`Course.length`).
        """
        return self._course(start).length(start.step, start.windows, start.counts, start.anchor)

    # -- the order ----------------------------------------------------------------------------
    def iter_steps(self, start: MixturePosition, worker_id: int = 0, num_workers: int = 1) -> Iterator[Any]:
        """Start arrays (``"pack"``: plans) of the steps ``j`` of a pass with ``j % num_workers == worker_id``."""
        chunk: list[tuple[int, list[int], list[int]]] = []
        tl = None
        steps = self._course(start).steps(start.step, start.windows, start.counts, start.anchor)
        for j, (step_tl, windows, counts, take) in enumerate(steps):
            if chunk and (len(chunk) == CHUNK_STEPS or step_tl is not tl):  # a chunk is one timeline's
                yield from self._emit(chunk, tl)
                chunk = []
            tl = step_tl
            if j % num_workers == worker_id:
                chunk.append((windows, counts, take))
                if num_workers == 1:
                    self._known.append((step_tl, windows, counts, take))
        if chunk:
            yield from self._emit(chunk, tl)

    def _emit(self, chunk: list[tuple[int, list[int], list[int]]], tl: Timeline | None) -> Any:
        out = self.step_starts(chunk, tl)
        if self.record is not None:
            self.record.append(out)
        return out

    def step_starts(self, chunk: list[tuple[int, list[int], list[int]]], tl: Timeline | None = None) -> Any:
        """This rank's ``(steps, B)`` starts for steps given as ``(windows, counts, take)`` of
        timeline ``tl`` (default: the sampler's current one); ``"pack"``: a list of plans."""
        s_of, k_of = self.step_units(chunk, tl)
        if self.documents == "pack":
            return self._step_plans(s_of, k_of)
        out = np.empty(s_of.shape, dtype=np.int64)
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

    def step_units(self, chunk: list[tuple[int, list[int], list[int]]], tl: Timeline | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(source, unit number)`` of this rank's rows, each ``(steps, B)``, for steps as in :meth:`step_starts`."""
        tl = self.timeline if tl is None else tl
        b, n_src, d = self.step_samples, len(self.names), tl.delta
        takes = np.array([t for _, _, t in chunk], dtype=np.int64)  # (steps, S)
        counts = np.array([c for _, c, _ in chunk], dtype=np.int64)
        tau, rate = tl.order_keys(np.array([w for w, _, _ in chunk], dtype=np.int64))
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
        return src[mine], k_src[mine]

    def _step_plans(self, s_of: np.ndarray, k_of: np.ndarray) -> list[np.ndarray]:
        """Packed rows: per step, the ``(n_pieces, 3)`` plan ``(row in batch, global start, tokens)``."""
        flat_s, flat_k = s_of.reshape(-1), k_of.reshape(-1)
        parts = []
        for s in np.unique(flat_s).tolist():
            at = np.flatnonzero(flat_s == s)
            got = self.samplers[s].row_pieces(flat_k[at])  # (i in at, source start, tokens)
            got[:, 0] = at[got[:, 0]]  # the slot: step * batch_size + row
            got[:, 1] += int(self.bases[s])
            parts.append(got)
        pieces = np.concatenate(parts)
        pieces = pieces[np.argsort(pieces[:, 0], kind="stable")]  # by slot, a row's pieces in order
        b = self.batch_size
        step, pieces[:, 0] = np.divmod(pieces[:, 0], b)
        cut = np.searchsorted(step, np.arange(1, len(s_of))).tolist()
        return np.split(pieces, cut)

    # -- state ----------------------------------------------------------------------------------
    def _spec(self) -> list[list[Any]]:
        return [[s, dict(zip(self.names, w))] for s, w in self.phases]

    def config(self) -> dict[str, Any]:
        """What a saved position is valid for: the order's inputs (``"bos"``/``"pack"`` add the mode:
        their units are other rows; ``"mask"`` reads the windows of ``"stream"``)."""
        out: dict[str, Any] = {"mode": self.mode, "seed": self.seed, "seq_len": self.seq_len}
        if self.documents in ("bos", "pack"):
            out["documents"] = self.documents
        if self.documents == "pack":
            out["block_docs"] = self.block_docs
        return out

    def position_state(self) -> dict[str, Any]:
        """The position: step, windows, per-source counts and fingerprints (and ``boundary``,
        ``bos_id``, ``mark`` with documents), anchor, schedule, the caps and where they count from."""
        return {
            "version": STATE_VERSION, "kind": "mixture",
            "config": self.config(),
            "step": self.step, "windows": self.windows, "step_samples": self.step_samples,
            "epoch": self.epoch, "offset": self.offset, "end": self.end, "primary": self.primary,
            "sources": {
                n: {"data": s.source.fingerprint, "n_tokens": s.source.n_tokens, "windows": c, **source_state(s, c, b)}
                for n, s, c, b in zip(self.names, self.samplers, self.counts, self.boundaries)
            },
            "anchor": {"step": self.anchor.step, "windows": self.anchor.windows, "targets": dict(zip(self.names, self.anchor.targets))},
            "schedule": self._spec(),
            "max_epochs": dict(self.max_epochs), "cap_from": dict(zip(self.names, self.cap_from)),
        }

    def load_position(self, state: dict[str, Any]) -> bool | None:
        """Take a saved position; other weights, caps, step sizes or sources re-anchor the schedule.

        A state saved before repetition caps (no ``cap_from``) counts a finite mixture's caps
        from each source's current epoch start, a stream's from 0.

        The whole state is checked (:func:`streamtok._position.read_mixture`) before anything changes.

        Raises:
            BoundaryMismatchError: a source's rows were split at another boundary token (a
                ``StateMismatchError``).
            StateMismatchError: not a mixture state, another mode/seed/seq_len/documents, a source
                name that now holds other data or was read with another ``bos_id``, or a corrupt
                state (named key).
        """
        saved = read_mixture(
            state, self.config(), version=STATE_VERSION,
            fingerprints={n: s.source.fingerprint for n, s in zip(self.names, self.samplers)},
        )
        counts = [saved.counts.get(n, 0) for n in self.names]
        marks = [
            check_source_state(n, s, state["sources"][n], c, b) if n in saved.counts else None
            for n, s, c, b in zip(self.names, self.samplers, counts, self.boundaries)
        ]
        self._known.clear()
        for order, mark in zip(self.samplers, marks):  # checked above: nothing raises from here
            if mark is not None:
                order.reset(*mark)
        same_pass = self.epochs is None or (saved.end is not None and saved.primary == self.primary)
        if self.epochs is None:
            end = None
        elif same_pass:
            end = saved.end
        else:
            end = self.epoch_start(self._p, self.epoch_of(self._p, counts[self._p]) + self.epochs)
        if saved.cap_from is not None and same_pass:
            cap_from = [saved.cap_from.get(n, 0) for n in self.names]
        elif self.epochs is None or (self.documents == "pack" and self._limits(counts) is None):
            cap_from = [0] * len(self.names)  # a stream counts from 0 (uncapped packed rows: nothing counts)
        else:  # an older state, or a new pass: the caps count from each source's epoch start
            cap_from = [self.epoch_start(s, self.epoch_of(s, c)) for s, c in enumerate(counts)]
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
        return saved.pass_ended


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
