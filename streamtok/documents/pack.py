"""PackSampler: the order of packed rows (``documents="pack"``), a pure function of the position.

The epoch's documents (in :func:`~streamtok.documents.samplers.document_order`) are cut into blocks of
``block_docs``; block ``b`` of epoch ``e`` packs into rows by :func:`~streamtok.documents.samplers.pack_block`,
a function of ``(seed, e, b)`` alone. The epoch's rows are the blocks' rows in block order;
global step ``g`` takes the next ``B*W`` of them and rank ``r`` its contiguous ``B``, as for
windows (DESIGN §2), so the stream does not depend on ``num_workers`` and a saved position
resumes under any world size or batch size.

The position is ``(epoch, block, row)``: the next row to read, plus ``offset`` (rows of the
epoch read so far, for display). Going to a position packs its block (and the next, when a
step crosses it); each process keeps the last few packed blocks. An epoch's partial last step
is dropped, as for windows.

Cost. A block is kept as arrays (:class:`PackedRows`), so a step's plan is a slice of them,
never per-row Python. The document order is computed for :data:`_ORDER_BLOCKS` blocks at a
time (the keyed permutation's cycle-walk costs per call, ~1 ms for 1000 documents, ~0.1 ms a
block in groups of 16). The steps taken are remembered by position, so the loader's
``iter_steps`` / ``advance`` / position check cost one slice per step, not three.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._order import MODES
from .._position import read_pack_position
from ..errors import ConfigError
from ..sampler import CHUNK_STEPS, StepSampler, as_int
from .index import DocumentIndex
from .samplers import document_order, packed_pieces

STATE_VERSION = 1
_CACHED_BLOCKS = 8
_ORDER_BLOCKS = 16  # blocks whose document order, starts and lengths are computed at once
_CACHED_TAKES = 256  # steps remembered by position (a chunk of CHUNK_STEPS and more, with workers)
Row = list[tuple[int, int]]  # (global token start, tokens) per piece


@dataclass(frozen=True)
class PackedRows:
    """Packed rows as one array: ``pieces[bounds[r]:bounds[r+1]]`` are row ``r``'s.

    Each piece is ``(row, global token start, tokens)``, its row counted from this object's
    first. Indexing gives a row as a :data:`Row` list, iterating all of them; a slice of rows
    is a :class:`PackedRows` (a copy of its pieces, rows renumbered from 0). The arrays are
    read-only: blocks and steps are cached and their pieces handed out as plans.
    """

    bounds: np.ndarray  # (rows + 1,) int64, from 0
    pieces: np.ndarray  # (n_pieces, 3) int64

    def __post_init__(self) -> None:
        self.bounds.flags.writeable = False
        self.pieces.flags.writeable = False

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step != 1:
                raise ValueError(f"PackedRows slices take a step of 1, not {step}")
            return self.rows(lo, max(lo, hi))
        row = range(len(self))[key]
        piece = self.pieces[self.bounds[row] : self.bounds[row + 1], 1:]
        return [tuple(p) for p in piece.tolist()]

    def __iter__(self) -> Iterator[Row]:
        return (self[r] for r in range(len(self)))

    def rows(self, lo: int, hi: int) -> PackedRows:
        """Rows ``[lo, hi)``, renumbered from 0."""
        a, b = int(self.bounds[lo]), int(self.bounds[hi])
        pieces = self.pieces[a:b].copy()
        if lo:
            pieces[:, 0] -= lo
        return PackedRows(self.bounds[lo : hi + 1] - a, pieces)

    @staticmethod
    def join(parts: list[PackedRows]) -> PackedRows:
        """The rows of ``parts``, one after another."""
        if len(parts) == 1:
            return parts[0]
        rows = np.cumsum([0] + [len(p) for p in parts[:-1]])
        n = np.cumsum([0] + [len(p.pieces) for p in parts[:-1]])
        pieces = np.concatenate([p.pieces for p in parts])
        bounds = np.concatenate([parts[0].bounds[:1]] + [p.bounds[1:] + k for p, k in zip(parts, n.tolist())])
        pieces[:, 0] += np.repeat(rows, [len(p.pieces) for p in parts])
        return PackedRows(bounds, pieces)


@dataclass(frozen=True)
class PackStart:
    """Where a pass over packed rows begins, and its last epoch (exclusive)."""

    epoch: int
    block: int
    row: int
    offset: int
    end_epoch: int | None


class PackSampler(StepSampler):
    """Packed rows for one rank, step by step: per step an ``(n_pieces, 3)`` int64 plan.

    Each plan row is ``(row in batch, global token start, tokens)``; a batch row's pieces
    follow each other and fill ``T+1`` tokens.

    Args:
        source: the reader.
        seq_len: tokens per row ``T``.
        index: the documents of ``source``.
        mode: document order: ``"shuffle"``, ``"random"`` or ``"sequential"``.
        seed, epochs, batch_size, rank, world_size: as for :class:`~streamtok.WindowSampler`.
        block_docs: documents per packed block: the packer's buffer.
    """

    MODES = MODES

    def __init__(
        self, source: Any, seq_len: int, *, index: DocumentIndex, mode: str = "shuffle", seed: int = 0,
        epochs: int | None = 1, batch_size: int = 1, rank: int | None = None, world_size: int | None = None,
        block_docs: int = 1000,
    ):
        self.configure(
            seq_len=seq_len, batch_size=batch_size, mode=mode, seed=seed, epochs=epochs, rank=rank, world_size=world_size,
        )
        self.source, self.index = source, index
        self.block_docs = as_int("block_docs", block_docs, 1)
        self.n_samples = index.n_documents
        if self.n_samples == 0:
            raise ConfigError(f"{source.describe()}: no document starts ({index.boundary.describe()}); check bos_id")
        self.n_blocks = -(-self.n_samples // self.block_docs)
        self.epoch, self.block, self.row, self.offset = 0, 0, 0, 0
        self.end_epoch = self.epochs
        self._cache: OrderedDict[tuple[int, int], PackedRows] = OrderedDict()
        self._order: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None
        self._takes: OrderedDict[tuple[int, int, int, int], tuple[PackedRows, int, int] | None] = OrderedDict()
        self.record: deque[list[np.ndarray]] | None = None  # see samplers.RecordedStarts
        if self._take(0, 0, 0, self.step_samples) is None:
            raise ConfigError(
                f"{source.describe()}: the packed rows of one epoch cannot fill one global step of "
                f"{self.step_samples} rows of {self.window_len} tokens; use a smaller batch or more data"
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # A worker repacks what it reads: the caches would only enlarge the pickle.
        state["_cache"], state["_takes"], state["_order"] = OrderedDict(), OrderedDict(), None
        return state

    #: Packed rows: :attr:`n_samples` and :attr:`steps_per_epoch` bound an epoch, they do not
    #: count it (the metrics and the monitor say so).
    epoch_size_exact = False

    @property
    def steps_per_epoch(self) -> int:
        """A bound (rows if every token were kept): the exact count packs the whole epoch."""
        return max(1, self.source.n_tokens // self.window_len // self.step_samples)

    def __repr__(self) -> str:
        return (
            f"PackSampler(mode={self.mode!r}, seq_len={self.seq_len}, batch_size={self.batch_size}, "
            f"block_docs={self.block_docs}, rank={self.rank}/{self.world_size}, epoch={self.epoch}, "
            f"block={self.block}, row={self.row})"
        )

    # -- the pure order -------------------------------------------------------------------
    def block_rows(self, epoch: int, block: int) -> PackedRows:
        """The packed rows of ``block`` of ``epoch`` (cached per process)."""
        key = (epoch, block)
        rows = self._cache.get(key)
        if rows is not None:
            self._cache.move_to_end(key)
            return rows
        starts, lengths = self._block_documents(epoch, block)
        bounds, docs, takes = packed_pieces(lengths, self.window_len)
        pieces = np.empty((len(docs), 3), dtype=np.int64)
        pieces[:, 0] = np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))
        pieces[:, 1] = starts[docs]
        pieces[:, 2] = takes
        rows = self._cache[key] = PackedRows(bounds, pieces)
        if len(self._cache) > _CACHED_BLOCKS:
            self._cache.popitem(last=False)
        return rows

    def _block_documents(self, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Starts and lengths of the documents of a block, in its order (computed per group of blocks)."""
        group = block // _ORDER_BLOCKS
        key = (epoch, group)
        if self._order is None or self._order[0] != key:
            lo = group * _ORDER_BLOCKS * self.block_docs
            k = np.arange(lo, min(lo + _ORDER_BLOCKS * self.block_docs, self.n_samples), dtype=np.int64)
            docs = document_order(self.mode, self.seed, epoch, k, self.n_samples)
            # A document runs to the next one's start (or the data's end): both starts in one
            # lookup (as DocumentIndex.lengths, which would look the starts up twice more).
            both = self.index.starts(np.concatenate((docs, np.minimum(docs + 1, self.n_samples - 1))))
            starts, after = both[: len(docs)], both[len(docs) :]
            after[docs == self.n_samples - 1] = self.index.reader.n_tokens
            self._order = (key, starts, after - starts)
        lo = (block - group * _ORDER_BLOCKS) * self.block_docs
        _, starts, lengths = self._order
        return starts[lo : lo + self.block_docs], lengths[lo : lo + self.block_docs]

    def _take(self, epoch: int, block: int, row: int, n: int) -> tuple[PackedRows, int, int] | None:
        """``n`` rows of ``epoch`` from ``(block, row)`` and the position after, or ``None`` past its end.

        Remembered by position: the loader asks for the same step's rows up to three times
        (its plan, ``advance``, and whether the next step fits).
        """
        key = (epoch, block, row, n)
        if key in self._takes:
            return self._takes[key]
        parts: list[PackedRows] = []
        need, got = n, None
        while need:
            if block >= self.n_blocks:
                break
            rows = self.block_rows(epoch, block)
            hi = min(len(rows), row + need)
            if hi > row:
                parts.append(rows.rows(row, hi) if row or hi < len(rows) else rows)
            need -= hi - row
            row = hi
            if row >= len(rows):
                block, row = block + 1, 0
        else:
            got = (PackedRows.join(parts), block, row)
        self._takes[key] = got
        if len(self._takes) > _CACHED_TAKES:
            self._takes.popitem(last=False)
        return got

    def _step(self, epoch: int, block: int, row: int) -> tuple[int, PackedRows, tuple[int, int, int]]:
        """The epoch and rows of the step at a position, and the position after it."""
        got = self._take(epoch, block, row, self.step_samples)
        if got is None:  # the epoch's partial last step is dropped
            epoch += 1
            got = self._take(epoch, 0, 0, self.step_samples)
            if got is None:
                raise ConfigError(
                    f"{self.source.describe()}: the packed rows of epoch {epoch} cannot fill one global "
                    f"step of {self.step_samples} rows; use a smaller batch or more data"
                )
        return epoch, got[0], (epoch, got[1], got[2])

    def plan(self, rows: PackedRows) -> np.ndarray:
        """This rank's ``(n_pieces, 3)`` plan out of a global step's rows (read-only: it may be
        the remembered step's own array, shared by the gather and the ``doc`` of the step)."""
        if len(rows) == self.batch_size:  # one rank: the step is this rank's rows
            return rows.pieces
        lo = self.rank * self.batch_size
        return rows.rows(lo, lo + self.batch_size).pieces

    def rows_at(self, epoch: int, block: int, row: int, n: int) -> PackedRows:
        """``n`` rows of ``epoch`` from ``(block, row)`` on (see :mod:`streamtok.locate`).

        Raises:
            ConfigError: fewer than ``n`` rows remain in the epoch from there.
        """
        got = self._take(epoch, block, row, n)
        if got is None:
            raise ConfigError(f"epoch {epoch} has fewer than {n} packed rows from block {block}, row {row}")
        return got[0]

    # -- positions ------------------------------------------------------------------------
    def here(self) -> PackStart:
        return PackStart(self.epoch, self.block, self.row, self.offset, self.end_epoch)

    def following(self) -> PackStart:
        epoch, end = self.new_pass_epochs(self.epoch, self.offset == 0)
        return PackStart(epoch, 0, 0, 0, end)

    def enter(self, start: PackStart) -> None:
        self.epoch, self.block, self.row, self.offset, self.end_epoch = (
            start.epoch, start.block, start.row, start.offset, start.end_epoch,
        )

    def _normalise(self) -> None:
        if self._take(self.epoch, self.block, self.row, self.step_samples) is None:
            self.epoch, self.block, self.row, self.offset = self.epoch + 1, 0, 0, 0

    def advance(self) -> None:
        """Record that the consumer received one more step."""
        epoch, _, (e, self.block, self.row) = self._step(self.epoch, self.block, self.row)
        self.offset = (self.offset if epoch == self.epoch else 0) + self.step_samples
        self.epoch = e
        self._normalise()

    def iter_steps(self, start: Any, worker_id: int = 0, num_workers: int = 1) -> Iterator[np.ndarray]:
        """Plans of the steps ``j`` of a pass with ``j % num_workers == worker_id``.

        Made a chunk of :data:`CHUNK_STEPS` of this worker's steps at a time (remembered by
        position, so ``advance`` finds them), and recorded as one chunk while :attr:`record`
        is a deque: the collator builds their ``doc`` at once from the record. A later epoch
        that cannot fill a step raises after the steps before it.
        """
        plans = self._walk(start, worker_id, num_workers)
        while True:
            chunk: list[np.ndarray] = []
            failed: ConfigError | None = None
            try:
                for plan in plans:
                    chunk.append(plan)
                    if len(chunk) == CHUNK_STEPS:
                        break
            except ConfigError as e:
                failed = e
            if chunk and self.record is not None:
                self.record.append(chunk)
            yield from chunk
            if failed is not None:
                raise failed
            if len(chunk) < CHUNK_STEPS:
                return

    def _walk(self, start: Any, worker_id: int, num_workers: int) -> Iterator[np.ndarray]:
        """This worker's plans of the pass from ``start``, one at a time."""
        pos, j = (start.epoch, start.block, start.row), 0
        while True:
            epoch, rows, after = self._step(*pos)
            if start.end_epoch is not None and epoch >= start.end_epoch:
                return
            if j % num_workers == worker_id:
                yield self.plan(rows)
            pos, j = after, j + 1

    def pass_steps(self, start: PackStart) -> int | None:
        """Global steps from ``start`` to the end of its pass (packs every block it covers)."""
        if start.end_epoch is None:
            return None
        total = 0
        for epoch in range(start.epoch, start.end_epoch):
            first = start.block if epoch == start.epoch else 0
            rows = sum(len(self.block_rows(epoch, b)) for b in range(first, self.n_blocks))
            rows -= start.row if epoch == start.epoch else 0
            total += rows // self.step_samples
        return total

    # -- state ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What a saved position is valid for (``boundary``: the token documents are split at)."""
        return {
            "documents": "pack", "mode": self.mode, "seed": self.seed, "seq_len": self.seq_len,
            "block_docs": self.block_docs, "bos_id": self.index.bos_id, "boundary": self.index.boundary.token,
            "data": self.source.fingerprint, "n_tokens": self.source.n_tokens,
        }

    def position_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "config": self.config(), "epoch": self.epoch, "block": self.block,
            "row": self.row, "offset": self.offset, "end_epoch": self.end_epoch,
        }

    def load_position(self, state: dict[str, Any]) -> bool | None:
        """Checked whole by :func:`streamtok._position.read_pack_position` before anything changes."""
        saved = read_pack_position(
            state, self.config(), version=STATE_VERSION, n_blocks=self.n_blocks,
            max_rows=self.source.n_tokens // self.window_len, block_rows=lambda e, b: len(self.block_rows(e, b)),
            boundary=(self.index.boundary.token, self.index.boundary.describe()),
        )
        self.epoch, self.block, self.row, self.offset = saved.epoch, saved.block, saved.row, saved.offset
        self._normalise()
        self.end_epoch = self.end_after(self.epoch, saved.end_epoch)
        return saved.pass_ended
