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
from ..sampler import StepSampler, as_int
from .index import DocumentIndex
from .samplers import document_order, pack_block

STATE_VERSION = 1
_CACHED_BLOCKS = 4
Row = list[tuple[int, int]]  # (global token start, tokens) per piece


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
            raise ConfigError(f"{source.describe()}: no document starts (bos_id={index.bos_id}); check bos_id")
        self.n_blocks = -(-self.n_samples // self.block_docs)
        self.epoch, self.block, self.row, self.offset = 0, 0, 0, 0
        self.end_epoch = self.epochs
        self._cache: OrderedDict[tuple[int, int], list[Row]] = OrderedDict()
        self.record: deque[list[np.ndarray]] | None = None  # see packing.RecordedStarts
        if self._take(0, 0, 0, self.step_samples) is None:
            raise ConfigError(
                f"{source.describe()}: the packed rows of one epoch cannot fill one global step of "
                f"{self.step_samples} rows of {self.window_len} tokens; use a smaller batch or more data"
            )

    @property
    def steps_per_epoch(self) -> int:
        """An estimate (rows if every token were kept): the exact count packs the whole epoch."""
        return max(1, self.source.n_tokens // self.window_len // self.step_samples)

    def __repr__(self) -> str:
        return (
            f"PackSampler(mode={self.mode!r}, seq_len={self.seq_len}, batch_size={self.batch_size}, "
            f"block_docs={self.block_docs}, rank={self.rank}/{self.world_size}, epoch={self.epoch}, "
            f"block={self.block}, row={self.row})"
        )

    # -- the pure order -------------------------------------------------------------------
    def block_rows(self, epoch: int, block: int) -> list[Row]:
        """The packed rows of ``block`` of ``epoch`` (cached per process)."""
        key = (epoch, block)
        rows = self._cache.get(key)
        if rows is not None:
            self._cache.move_to_end(key)
            return rows
        lo = block * self.block_docs
        k = np.arange(lo, min(lo + self.block_docs, self.n_samples), dtype=np.int64)
        docs = document_order(self.mode, self.seed, epoch, k, self.n_samples)
        starts = self.index.starts(docs).tolist()
        packed = pack_block(self.index.lengths(docs), self.window_len)
        rows = [[(starts[i], n) for i, n in row] for row in packed]
        self._cache[key] = rows
        if len(self._cache) > _CACHED_BLOCKS:
            self._cache.popitem(last=False)
        return rows

    def _take(self, epoch: int, block: int, row: int, n: int) -> tuple[list[Row], int, int] | None:
        """``n`` rows of ``epoch`` from ``(block, row)`` and the position after, or ``None`` past its end."""
        out: list[Row] = []
        while len(out) < n:
            if block >= self.n_blocks:
                return None
            rows = self.block_rows(epoch, block)
            got = rows[row : row + n - len(out)]
            out += got
            row += len(got)
            if row >= len(rows):
                block, row = block + 1, 0
        return out, block, row

    def _step(self, epoch: int, block: int, row: int) -> tuple[int, list[Row], tuple[int, int, int]]:
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

    def plan(self, rows: list[Row]) -> np.ndarray:
        """This rank's ``(n_pieces, 3)`` plan out of a global step's rows."""
        mine = rows[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return np.array([(r, s, n) for r, row in enumerate(mine) for s, n in row], dtype=np.int64).reshape(-1, 3)

    def rows_at(self, epoch: int, block: int, row: int, n: int) -> list[Row]:
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
        """Plans of the steps ``j`` of a pass with ``j % num_workers == worker_id``."""
        pos, j = (start.epoch, start.block, start.row), 0
        while True:
            epoch, rows, after = self._step(*pos)
            if start.end_epoch is not None and epoch >= start.end_epoch:
                return
            if j % num_workers == worker_id:
                plan = self.plan(rows)
                if self.record is not None:
                    self.record.append([plan])
                yield plan
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
        """What a saved position is valid for."""
        return {
            "documents": "pack", "mode": self.mode, "seed": self.seed, "seq_len": self.seq_len,
            "block_docs": self.block_docs, "bos_id": self.index.bos_id,
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
        )
        self.epoch, self.block, self.row, self.offset = saved.epoch, saved.block, saved.row, saved.offset
        self._normalise()
        self.end_epoch = self.end_after(self.epoch, saved.end_epoch)
        return saved.pass_ended
