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

import functools

import numpy as np
import torch

from .documents import document_starts
from .reader import MemmapReader


class Documents(tuple):
    """A batch's document boundaries: ``position_ids``, ``cu_seqlens`` and ``max_seqlen``.

    Stored as the tuple ``(cu_seqlens, max_seqlen, batch_size, seq_len)``: a prefetcher that
    moves tuples of tensors moves the compact boundaries, and ``position_ids`` (``B*T`` int64,
    as many bytes as ``x``) are made from them on first use, on the boundaries' device.
    """

    def __new__(cls, items):  # noqa: ANN001 - any iterable of the four fields
        return super().__new__(cls, items)

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """``(n+1,)`` int32: segment boundaries over the flattened ``B*T`` tokens, 0 to ``B*T``."""
        return self[0]

    @property
    def max_seqlen(self) -> int:
        """The longest segment, in tokens."""
        return self[1]

    @property
    def position_ids(self) -> torch.Tensor:
        """``(B, T)`` int64: 0 at each segment start, counting up (made once, on first use)."""
        made = self.__dict__.get("position_ids")
        if made is None:
            made = self.__dict__["position_ids"] = position_ids(self[0], self[2], self[3])
        return made

    def __repr__(self) -> str:
        return f"Documents(batch_size={self[2]}, seq_len={self[3]}, segments={len(self[0]) - 1}, max_seqlen={self[1]})"


def position_ids(cu_seqlens: torch.Tensor, batch_size: int, seq_len: int) -> torch.Tensor:
    """``(B, T)`` int64 positions counting from 0 at each segment start of ``cu_seqlens``."""
    n = batch_size * seq_len
    if cu_seqlens.device.type == "cpu":
        cu = cu_seqlens.numpy().astype(np.int64)
        out = np.repeat(cu[:-1], np.diff(cu))
        np.subtract(_arange(n), out, out=out)
        return torch.from_numpy(out.reshape(batch_size, seq_len))
    return _position_ids_torch(cu_seqlens, batch_size, seq_len)


def _position_ids_torch(cu_seqlens: torch.Tensor, batch_size: int, seq_len: int) -> torch.Tensor:
    n = batch_size * seq_len
    cu = cu_seqlens.to(torch.int64)
    starts = torch.repeat_interleave(cu[:-1], cu[1:] - cu[:-1], output_size=n)  # no host sync
    return (torch.arange(n, device=cu.device) - starts).view(batch_size, seq_len)


@functools.lru_cache(maxsize=4)
def _arange(n: int) -> np.ndarray:
    base = np.arange(n, dtype=np.int64)
    base.flags.writeable = False
    return base


def documents_from_starts(rows: np.ndarray, cols: np.ndarray, batch_size: int, seq_len: int) -> Documents:
    """The ``doc`` of a batch whose rows have segments starting at columns ``cols`` of ``rows``.

    Args:
        rows, cols: segment starts inside rows (column 0 of each row is added), any order.
        batch_size, seq_len: the batch shape ``(B, T)``.
    """
    inner = rows.astype(np.int64) * seq_len + cols.astype(np.int64)
    flat = np.concatenate((np.arange(0, batch_size * seq_len, seq_len, dtype=np.int64), inner))
    flat.sort()
    cu = np.append(flat, batch_size * seq_len)
    return Documents((torch.from_numpy(cu.astype(np.int32)), int(np.diff(cu).max()), batch_size, seq_len))


class DocumentIndex:
    """Global document starts over a :class:`MemmapReader`, from the shards' indexes.

    Args:
        reader: the token array.
        bos_id: the boundary token (``None``: each shard's format default; Megatron's ``.idx``).
    """

    def __init__(self, reader: MemmapReader, bos_id: int | None = None):
        self.reader = reader
        self.bos_id = bos_id
        self._shard_starts = self._open()
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
        self._shard_starts = self._open()

    def _open(self) -> list[np.ndarray]:
        raw = str(self.reader.raw_dtype)
        # Plain ndarray views of the maps: np.memmap's subclass hooks cost per lookup.
        return [np.asarray(document_starts(i.path, bos_id=self.bos_id, raw_dtype=raw)) for i in self.reader.infos]

    def _by_shard(self, k: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
        """``(shard, selection)`` pairs covering ``k`` (one slice when a single shard is touched)."""
        if len(k) == 0:
            return []
        first, last = int(k.min()), int(k.max())
        if first == last:
            return [(first, slice(None))]
        return [(shard, k == shard) for shard in range(first, last + 1)]

    def starts(self, doc_ids: np.ndarray) -> np.ndarray:
        """Global token position where each document of ``doc_ids`` starts."""
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        k = np.searchsorted(self.doc_offsets[1:], doc_ids, side="right")
        out = np.empty(doc_ids.shape, dtype=np.int64)
        for shard, sel in self._by_shard(k):
            local = self._shard_starts[shard][doc_ids[sel] - self.doc_offsets[shard]]
            out[sel] = local + self.reader.offsets[shard]
        return out

    def first_at_or_after(self, positions: np.ndarray, strict: bool = False) -> np.ndarray:
        """Id of the first document starting at (``strict``: after) each global position."""
        positions = np.asarray(positions, dtype=np.int64)
        side = "right" if strict else "left"
        k = np.minimum(self.reader.locate(positions), len(self._shard_starts) - 1)
        out = np.empty(positions.shape, dtype=np.int64)
        for shard, sel in self._by_shard(k):
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

    def window_segments(self, row_starts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Segment starts of windows ``[s, s + seq_len)`` over their flattened tokens, ascending.

        A segment starts at each row start and at each document start inside a row. Returns
        ``(flat, row_slots)``: the starts, and where in ``flat`` each row's first segment is.
        """
        row_starts = np.asarray(row_starts, dtype=np.int64)
        n = len(row_starts)
        # One lookup for both ends: the first document after s starts at or after s + 1.
        ends = self.first_at_or_after(np.concatenate((row_starts + 1, row_starts + seq_len)))
        lo, counts = ends[:n], ends[n:] - ends[:n]
        before = np.cumsum(counts) - counts
        rows = np.repeat(np.arange(n, dtype=np.int64), counts)
        ids = np.arange(len(rows), dtype=np.int64) + np.repeat(lo - before, counts)
        row_slots = np.arange(n, dtype=np.int64) + before
        flat = np.empty(n + len(rows), dtype=np.int64)
        inner = np.ones(len(flat), dtype=bool)
        inner[row_slots] = False
        flat[row_slots] = np.arange(n, dtype=np.int64) * seq_len
        flat[inner] = self.starts(ids) - row_starts[rows] + rows * seq_len  # rows, then columns, ascend
        return flat, row_slots

    def window_documents(self, row_starts: np.ndarray, seq_len: int) -> Documents:
        """The ``doc`` of windows ``[s, s + seq_len)``: segments break at every document start."""
        return split_documents(*self.window_segments(row_starts, seq_len), len(row_starts), seq_len, len(row_starts))[0]


def split_documents(flat: np.ndarray, row_slots: np.ndarray, n_rows: int, seq_len: int, batch_size: int) -> list[Documents]:
    """The ``doc`` of each batch of ``batch_size`` rows, from the segment starts of ``n_rows`` rows."""
    per_batch = batch_size * seq_len
    firsts = row_slots[::batch_size]
    n = len(firsts)
    longest = np.maximum.reduceat(np.diff(flat, append=n_rows * seq_len), firsts).tolist()
    # One int32 array for all batches: batch i's boundaries, shifted to start at 0, then B*T.
    per = np.diff(firsts, append=len(flat))
    cu = np.empty(len(flat) + n, dtype=np.int32)
    ends = np.cumsum(per + 1) - 1
    inner = np.ones(len(cu), dtype=bool)
    inner[ends] = False
    cu[inner] = flat - np.repeat(np.arange(n, dtype=np.int64) * per_batch, per)
    cu[ends] = per_batch
    tensor = torch.from_numpy(cu)
    edges = [0, *(ends + 1).tolist()]
    return [Documents((tensor[edges[i] : edges[i + 1]], longest[i], batch_size, seq_len)) for i in range(n)]
