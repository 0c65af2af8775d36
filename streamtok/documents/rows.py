"""PackedRowIndex: one source's packed rows as a single numbered stream, row ``k`` of the run.

(Not :class:`streamtok.documents.pack.PackedRows`, which holds the rows of one packed block or
step as arrays: this class numbers the rows of every block across epochs and finds row ``k``
in them; the blocks it reads are ``PackedRows``.)

A mixture counts what each source has given (DESIGN §7); with ``documents="pack"`` a source
gives packed rows, so its count ``k`` must name a row. The rows are those of
:class:`~streamtok.documents.pack.PackSampler` (``epochs=None``, one rank): epoch ``e``'s rows
are its blocks' rows in block order, and epoch ``e + 1``'s follow, every row used (the epoch's
partial last step is a single source's rule; a mixture's steps take rows from any source).

How many rows a block holds is known only by packing it, so row ``k`` is found through a
table of the rows before each block, extended forward as rows are asked for (one int per block
of ``block_docs`` documents). Asked in ascending order, as the mixture asks, every block is
packed once and read while cached. The table starts at a *mark* ``(rows before, epoch, block)``:
0 at a fresh start; a resumed run starts at the mark its state saved, so it packs from
there, not from the run's first block. A row before the table's start extends it back.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

import numpy as np

from ..errors import ConfigError, StateMismatchError
from .index import DocumentIndex
from .pack import PackSampler

Row = list[tuple[int, int]]  # (token start in the source, tokens) per piece


class PackedRowIndex:
    """Row ``k`` of a source's packed-row stream, across epochs (see the module).

    Args:
        source: the source's reader.
        seq_len: tokens per row ``T``.
        index: the source's documents.
        mode, seed: the document order.
        block_docs: documents per packed block.

    Raises:
        ConfigError: the source's documents do not fill one row.
    """

    def __init__(self, source: Any, seq_len: int, *, index: DocumentIndex, mode: str, seed: int, block_docs: int = 1000):
        self.packer = PackSampler(
            source, seq_len, index=index, mode=mode, seed=seed, epochs=None, batch_size=1, rank=0, world_size=1,
            block_docs=block_docs,
        )
        self.source, self.index, self.n_blocks = source, index, self.packer.n_blocks
        # Rows an epoch holds at most (every token in a full row): the per-epoch size reported
        # and used for estimates; the exact count of an epoch packs all of it.
        self.n_samples = max(1, source.n_tokens // self.packer.window_len)
        self.epoch_size_exact = False  # n_samples bounds an epoch's rows (see PackSampler)
        # The table and the packer's cache are shared by the loader's thread (rows) and the
        # training thread (state_dict's mark, the primary's epoch start): one at a time.
        self._lock = threading.RLock()
        self.reset()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def reset(self, rows_before: int = 0, epoch: int = 0, block: int = 0) -> None:
        """Start the table at a mark: ``rows_before`` rows come before ``block`` of ``epoch``."""
        with self._lock:
            self._reset(rows_before, epoch, block)

    def _reset(self, rows_before: int, epoch: int, block: int) -> None:
        self._first = epoch * self.n_blocks + block  # the table's first block, counted over epochs
        self._cum = [rows_before]  # _cum[i]: rows before block _first + i

    def _extend(self, k: int) -> None:
        """Pack blocks until the table holds row ``k``."""
        empty = 0
        while self._cum[-1] <= k:
            epoch, block = divmod(self._first + len(self._cum) - 1, self.n_blocks)
            n = len(self.packer.block_rows(epoch, block))
            self._cum.append(self._cum[-1] + n)
            empty = 0 if n else empty + 1
            if empty > self.n_blocks:  # a whole epoch of blocks gave no row
                raise ConfigError(f"{self.source.describe()}: epoch {epoch}'s documents pack into no row of {self.packer.window_len} tokens")

    def _back(self, g: int) -> None:
        """Extend the table back to block ``g`` (counted over epochs): packs the blocks between."""
        while self._first > g:
            self._first -= 1
            self._cum.insert(0, self._cum[0] - len(self.packer.block_rows(*divmod(self._first, self.n_blocks))))
        if self._cum[0] < 0:  # only a mark that is not this source's can give this
            raise StateMismatchError(f"{self.source.describe()}: the packed-rows mark of the state is not this source's (rows before block {g}: {self._cum[0]})")

    def _block_of(self, k: int) -> int:
        while k < self._cum[0]:
            self._back(self._first - 1)
        self._extend(k)
        return bisect.bisect_right(self._cum, k) - 1

    def rows(self, ks: list[int]) -> list[Row]:
        """The pieces of rows ``ks`` (in that order) as lists: :meth:`row_pieces` as Python objects."""
        out: list[Row] = [[] for _ in ks]
        for i, start, tokens in self.row_pieces(np.asarray(ks, dtype=np.int64)).tolist():
            out[i].append((start, tokens))
        return out

    def row_pieces(self, ks: np.ndarray) -> np.ndarray:
        """The pieces of rows ``ks`` as one ``(n_pieces, 3)`` array ``(i, global start, tokens)``,
        ``i`` the position in ``ks`` of the row the piece belongs to, a row's pieces in order
        and rows in the order of ``ks``; each block is packed once however many of its rows are asked."""
        ks = np.asarray(ks, dtype=np.int64)
        if not len(ks):
            return np.empty((0, 3), dtype=np.int64)
        with self._lock:
            first = self._block_of(int(ks.min()))  # moves the table back to the first row if needed
            last = self._block_of(int(ks.max()))
            # Only the blocks asked for: the table grows by a block's count for the whole run.
            cum = np.asarray(self._cum[first : last + 2], dtype=np.int64)
            blocks = np.searchsorted(cum, ks, side="right") - 1
            parts = []
            for b in np.unique(blocks).tolist():
                at = np.flatnonzero(blocks == b)
                packed = self.packer.block_rows(*divmod(self._first + first + b, self.n_blocks))
                local = ks[at] - cum[b]
                lo, hi = packed.bounds[local], packed.bounds[local + 1]
                counts = hi - lo
                idx = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
                piece = np.empty((len(idx), 3), dtype=np.int64)
                piece[:, 0] = np.repeat(at, counts)
                piece[:, 1:] = packed.pieces[idx, 1:]
                parts.append(piece)
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return out[np.argsort(out[:, 0], kind="stable")]

    def epoch_start(self, epoch: int) -> int:
        """Rows before ``epoch``'s first row (packs every block before it not yet in the table)."""
        g = epoch * self.n_blocks
        with self._lock:
            self._back(g)
            while self._first + len(self._cum) - 1 < g:
                e, b = divmod(self._first + len(self._cum) - 1, self.n_blocks)
                self._cum.append(self._cum[-1] + len(self.packer.block_rows(e, b)))
            return self._cum[g - self._first]

    def epoch_of(self, k: int) -> int:
        """The epoch row ``k`` belongs to (packs up to it if needed)."""
        with self._lock:
            b = self._block_of(k)  # first: it moves the table's start back for a row before it
            return (self._first + b) // self.n_blocks

    def mark(self, k: int) -> tuple[int, int, int]:
        """A mark at or before row ``k`` (``(rows before, epoch, block)``), from the table, packing nothing."""
        with self._lock:
            if k < self._cum[0]:
                return 0, 0, 0
            b = bisect.bisect_right(self._cum, k) - 1
            epoch, block = divmod(self._first + b, self.n_blocks)
            return self._cum[b], epoch, block
