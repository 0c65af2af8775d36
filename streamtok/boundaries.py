"""Document boundaries over a reader's virtual token array, and the ``doc`` a batch carries.

:class:`DocumentIndex` joins the shards' indexes (:mod:`streamtok.documents`, each memory-mapped)
into global document ids: document ``d`` lies in shard ``k`` with ``doc_offsets[k] <= d <
doc_offsets[k+1]`` and starts at ``offsets[k] + starts_k[d - doc_offsets[k]]``. Only the
per-shard document counts are held in memory; a lookup of ``n`` positions costs one
``searchsorted`` per shard they touch.

A batch's :class:`Documents` follow from where segments start inside its rows: every row
start and every document start in the row. ``cu_seqlens`` are those starts over the flattened
``B*T`` tokens, with ``B*T`` appended; ``position_ids`` count from 0 at each of them.
"""

from __future__ import annotations

import numpy as np
import torch

from .documents import document_starts
from .reader import MemmapReader


class Documents(tuple):
    """``(position_ids, cu_seqlens, max_seqlen)`` of one batch, with those names.

    A tuple, so a prefetcher that moves tuples of tensors moves it whole.
    """

    __slots__ = ()

    def __new__(cls, items):  # noqa: ANN001 - any iterable of the three fields
        return super().__new__(cls, items)

    @property
    def position_ids(self) -> torch.Tensor:
        """``(B, T)`` int64: 0 at each segment start, counting up."""
        return self[0]

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """``(n+1,)`` int32: segment boundaries over the flattened ``B*T`` tokens, 0 to ``B*T``."""
        return self[1]

    @property
    def max_seqlen(self) -> int:
        """The longest segment, in tokens."""
        return self[2]

    def __repr__(self) -> str:
        return f"Documents(segments={len(self[1]) - 1}, max_seqlen={self[2]})"


def documents_from_starts(rows: np.ndarray, cols: np.ndarray, batch_size: int, seq_len: int) -> Documents:
    """The ``doc`` of a batch whose rows have segments starting at columns ``cols`` of ``rows``.

    Args:
        rows, cols: segment starts inside rows (column 0 of each row is added), any order.
        batch_size, seq_len: the batch shape ``(B, T)``.
    """
    T = seq_len
    inner = rows.astype(np.int64) * T + cols.astype(np.int64)
    flat = np.concatenate((np.arange(0, batch_size * T, T, dtype=np.int64), inner))
    flat.sort()
    cu = np.empty(len(flat) + 1, dtype=np.int64)
    cu[:-1], cu[-1] = flat, batch_size * T
    lengths = np.diff(cu)
    position_ids = np.arange(batch_size * T, dtype=np.int64) - np.repeat(flat, lengths)
    return Documents(
        (torch.from_numpy(position_ids.reshape(batch_size, T)), torch.from_numpy(cu.astype(np.int32)), int(lengths.max()))
    )


class DocumentIndex:
    """Global document starts over a :class:`MemmapReader`, from the shards' indexes.

    Args:
        reader: the token array.
        bos_id: the boundary token (``None``: each shard's format default; Megatron's ``.idx``).
    """

    def __init__(self, reader: MemmapReader, bos_id: int | None = None):
        self.reader = reader
        self.bos_id = bos_id
        self._shard_starts = [
            document_starts(i.path, bos_id=bos_id, raw_dtype=str(reader.raw_dtype)) for i in reader.infos
        ]
        counts = np.array([len(s) for s in self._shard_starts], dtype=np.int64)
        self.doc_offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.n_documents = int(self.doc_offsets[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # Memory maps are reopened in the worker (the sidecar is current: no rescan).
        state["_shard_starts"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        raw = str(self.reader.raw_dtype)
        self._shard_starts = [document_starts(i.path, bos_id=self.bos_id, raw_dtype=raw) for i in self.reader.infos]

    def starts(self, doc_ids: np.ndarray) -> np.ndarray:
        """Global token position where each document of ``doc_ids`` starts."""
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        k = np.searchsorted(self.doc_offsets[1:], doc_ids, side="right")
        out = np.empty(doc_ids.shape, dtype=np.int64)
        for shard in np.unique(k).tolist():
            sel = k == shard
            out[sel] = np.asarray(self._shard_starts[shard])[doc_ids[sel] - self.doc_offsets[shard]] + self.reader.offsets[shard]
        return out

    def first_at_or_after(self, positions: np.ndarray, strict: bool = False) -> np.ndarray:
        """Id of the first document starting at (``strict``: after) each global position."""
        positions = np.asarray(positions, dtype=np.int64)
        side = "right" if strict else "left"
        k = np.minimum(self.reader.locate(positions), len(self._shard_starts) - 1)
        out = np.empty(positions.shape, dtype=np.int64)
        for shard in np.unique(k).tolist():
            sel = k == shard
            local = positions[sel] - self.reader.offsets[shard]
            out[sel] = np.searchsorted(self._shard_starts[shard], local, side=side) + self.doc_offsets[shard]
        return out

    def lengths(self, doc_ids: np.ndarray) -> np.ndarray:
        """Tokens of each document: up to the next document's start, or the data's end."""
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        nxt = np.full(doc_ids.shape, self.reader.n_tokens, dtype=np.int64)
        has_next = doc_ids + 1 < self.n_documents
        nxt[has_next] = self.starts(doc_ids[has_next] + 1)
        return nxt - self.starts(doc_ids)

    def window_documents(self, row_starts: np.ndarray, seq_len: int) -> Documents:
        """The ``doc`` of windows ``[s, s + seq_len)``: segments break at every document start."""
        row_starts = np.asarray(row_starts, dtype=np.int64)
        lo = self.first_at_or_after(row_starts, strict=True)
        hi = self.first_at_or_after(row_starts + seq_len)
        counts = hi - lo
        rows = np.repeat(np.arange(len(row_starts), dtype=np.int64), counts)
        ids = lo[rows] + (np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts))
        cols = self.starts(ids) - row_starts[rows]
        return documents_from_starts(rows, cols, len(row_starts), seq_len)
