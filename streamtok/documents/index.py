"""Document boundaries over a reader's virtual token array, and the ``doc`` a batch carries.

:class:`DocumentIndex` joins the shards' indexes (:mod:`streamtok.documents.sidecar`, each memory-mapped)
into global document ids: document ``d`` lies in shard ``k`` with ``doc_offsets[k] <= d <
doc_offsets[k+1]`` and starts at ``offsets[k] + starts_k[d - doc_offsets[k]]``. Only the
per-shard document counts are held in memory; a lookup of ``n`` positions costs one
``searchsorted`` per shard they touch. A chunk of batches' windows is looked up with its rows
in ascending order (:meth:`DocumentIndex.batch_documents`), so each shard's rows are one slice
and their keys are sorted.

A batch's :class:`Documents` follow from where segments start inside its rows: every row
start and every document start in the row. ``cu_seqlens`` are those starts over the flattened
``B*T`` tokens, with ``B*T`` appended; ``position_ids`` count from 0 at each of them.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from ..reader import MemmapReader
from .boundary import resolve_boundary
from .sidecar import document_starts
from .windowtable import MAX_BYTES, WindowTable, table_bytes


class Documents(tuple):
    """A batch's document boundaries: ``position_ids``, ``cu_seqlens`` and ``max_seqlen``.

    Stored as the tuple ``(cu_seqlens, max_seqlen, batch_size, seq_len)``: a prefetcher that
    moves tuples of tensors moves the compact boundaries, and ``position_ids`` (``B*T`` int64,
    as many bytes as ``x``) are made from them on first use, on the boundaries' device.
    """

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


def _sorted_with_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(argsort, sorted values)`` of non-negative ints, ties in index order (as a stable argsort).

    Each value and its index are one int64 key (``value << bits | index``), sorted by
    ``np.sort``: ~6x cheaper than ``np.argsort(kind="stable")`` on a chunk of 2048 row starts
    (the stable argsort of int64 is a merge sort through an index; this is a quicksort of
    the values themselves). Values too large to share 63 bits with the index take the argsort.
    """
    bits = max(1, (len(values) - 1).bit_length())
    top = int(values.max())
    if top >= 1 << (63 - bits) or int(values.min()) < 0:
        order = np.argsort(values, kind="stable")
        return order, values[order]
    keys = np.sort((values << bits) | np.arange(len(values), dtype=np.int64))
    return keys & ((1 << bits) - 1), keys >> bits


_FEW_SHARDS = 16  # up to this many shards, DocumentIndex.starts finds an id's shard by comparisons


class DocumentIndex:
    """Global document starts over a :class:`MemmapReader`, from the shards' indexes.

    Args:
        reader: the token array.
        bos_id: the boundary token; ``None``: what the data says (the tokenize manifest beside
            the shards, else the format: :mod:`streamtok.documents.boundary`).
        source: a mixture's source name, named in the warning about an assumed token (each
            source of a mixture warns for itself, as one source does).

    Attributes:
        bos_id: as given (what a saved state records).
        boundary: the token used and where it came from.

    Raises:
        ConfigError: ``bos_id`` is ``None`` and nothing says which token starts a document.
    """

    def __init__(self, reader: MemmapReader, bos_id: int | None = None, *, source: str | None = None):
        self.reader = reader
        self.bos_id = bos_id
        self.boundary = resolve_boundary(reader.infos, bos_id, remote=getattr(reader, "remote", None))
        if self.boundary.assumed:
            where = reader.describe() if source is None else f"source {source!r} ({reader.describe()})"
            warnings.warn(
                f"streamtok: {where}: the shards do not say which token starts a document; "
                f"{self.boundary.describe()}. Pass bos_id={self.boundary.token} to say so, or the id your "
                "tokenizer writes before each document", UserWarning, stacklevel=4,
            )
        self._shard_starts = self._open()
        counts = np.array([len(s) for s in self._shard_starts], dtype=np.int64)
        self.doc_offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.n_documents = int(self.doc_offsets[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # Memory maps are reopened in the worker (the sidecar is current: no rescan); window
        # tables are rebuilt where a lookup needs them.
        state["_shard_starts"] = None
        state.pop("_tables", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._shard_starts = self._open()

    def _open(self) -> list[np.ndarray]:
        raw, bos_id = str(self.reader.raw_dtype), self.boundary.token
        # Plain ndarray views of the maps: np.memmap's subclass hooks cost per lookup.
        remote = getattr(self.reader, "remote", None)
        if remote is not None:  # remote shards: fetched or built once, cached locally (streamtok.storage.docs)
            from ..storage.docs import remote_document_starts

            return [
                remote_document_starts(remote, k, bos_id=bos_id) if remote.is_remote(k)
                else np.asarray(document_starts(i.path, bos_id=bos_id, raw_dtype=raw))
                for k, i in enumerate(self.reader.infos)
            ]
        return [np.asarray(document_starts(i.path, bos_id=bos_id, raw_dtype=raw)) for i in self.reader.infos]

    def _by_shard(self, k: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
        """``(shard, selection)`` pairs covering ``k`` (one slice when a single shard is touched)."""
        if len(k) == 0:
            return []
        first, last = int(k.min()), int(k.max())
        if first == last:
            return [(first, slice(None))]
        return [(shard, k == shard) for shard in range(first, last + 1)]

    def starts(self, doc_ids: np.ndarray) -> np.ndarray:
        """Global token position where each document of ``doc_ids`` starts.

        The ids may come in any order (a shuffled block's: ~32K at once for ``"pack"``), so
        neither the shard search nor the selection branches per id: up to 16 shards, an id's
        shard is a sum of comparisons and each shard's ids are picked by ``flatnonzero``
        (~4x cheaper than ``searchsorted`` and boolean masks on random ids); with more, the
        ids are grouped by a stable sort of their shard numbers (a radix sort).
        """
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        out = np.empty(doc_ids.shape, dtype=np.int64)
        if doc_ids.size == 0:
            return out
        offsets, shards, bases = self.doc_offsets, self._shard_starts, self.reader.offset_list
        flat, dest = doc_ids.reshape(-1), out.reshape(-1)
        if len(shards) <= _FEW_SHARDS:
            k = np.zeros(len(flat), dtype=np.intp)
            for bound in offsets[1:-1].tolist():
                k += flat >= bound
            first, last = int(k.min()), int(k.max())
            if first == last:
                np.add(shards[first].take(flat - offsets[first]), bases[first], out=dest)
                return out
            for shard in range(first, last + 1):
                where = np.flatnonzero(k == shard)
                dest[where] = shards[shard].take(flat.take(where) - offsets[shard]) + bases[shard]
            return out
        k = np.searchsorted(offsets[1:], flat, side="right")
        order = np.argsort(k.astype(np.uint16 if len(shards) < 1 << 16 else np.int64), kind="stable")
        ks, ids = k.take(order), flat.take(order)
        cut = np.flatnonzero(np.diff(ks)) + 1
        for a, b in zip([0, *cut.tolist()], [*cut.tolist(), len(ks)]):
            shard = int(ks[a])
            dest[order[a:b]] = shards[shard].take(ids[a:b] - offsets[shard]) + bases[shard]
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

    def _window_bounds(self, s: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
        """Ids ``[lo, hi)`` of the documents that start inside windows ``(s, s + seq_len)``, ``s`` ascending.

        A window inside one shard is searched in that shard's starts alone (two
        ``searchsorted`` per shard touched, walking forward through it); the few that run past
        a shard's end are looked up across shards. Also returns ``(shard, i, j)``: rows
        ``[i, j)`` lie in that shard with their whole window.
        """
        n = len(s)
        offsets = self.reader.offsets
        # Rows [a[k], b[k]) of s lie in shard k with their whole window; rows from
        # max(a[k], b[k]) to a[k+1] run past its end.
        a = np.searchsorted(s, offsets)
        b = np.maximum(a[:-1], np.searchsorted(s, offsets[1:] - seq_len, side="right"))
        lo = np.empty(n, dtype=np.int64)
        hi = np.empty(n, dtype=np.int64)
        inside = np.flatnonzero(b > a[:-1])
        ranges = list(zip(inside.tolist(), a[inside].tolist(), b[inside].tolist()))
        for k, i, j in ranges:
            shard, base, first = self._shard_starts[k], self.reader.offset_list[k], int(self.doc_offsets[k])
            np.add(shard.searchsorted(s[i:j] + (1 - base)), first, out=lo[i:j])
            np.add(shard.searchsorted(s[i:j] + (seq_len - base)), first, out=hi[i:j])
        if sum(j - i for _, i, j in ranges) < n:
            cross = self._outside(ranges, n)
            lo[cross] = self.first_at_or_after(s[cross] + 1)
            hi[cross] = self.first_at_or_after(s[cross] + seq_len)
        return lo, hi, ranges

    @staticmethod
    def _outside(ranges: list[tuple[int, int, int]], n: int) -> np.ndarray:
        """Rows of ``n`` outside the ``(shard, i, j)`` ranges, as a mask."""
        mask = np.ones(n, dtype=bool)
        for _, i, j in ranges:
            mask[i:j] = False
        return mask

    def window_table(self, period: int, seq_len: int) -> WindowTable | None:
        """The :class:`~streamtok.documents.windowtable.WindowTable` of windows of ``seq_len``
        tokens every ``period``, built on first use (``None`` above its memory bound)."""
        tables: dict[tuple[int, int], WindowTable | None] = self.__dict__.setdefault("_tables", {})
        key = (int(period), int(seq_len))
        if key not in tables:
            fits = table_bytes(self.reader.n_tokens, self.n_documents, period, seq_len) <= MAX_BYTES
            tables[key] = (
                WindowTable(self._shard_starts, self.reader.offset_list, period, seq_len, self.window_origins())
                if fits else None
            )
        return tables[key]

    def window_origins(self) -> tuple[int, ...]:
        """Where the grids of the windows asked of this index begin: ``(0,)``, one grid over the
        reader (a mixture's joint index: each source's first token)."""
        return (0,)

    def batch_documents(
        self, row_starts: np.ndarray, seq_len: int, batch_size: int, period: int | None = None
    ) -> list[Documents]:
        """The ``doc`` of each batch of ``batch_size`` consecutive windows ``[s, s + seq_len)``.

        A segment starts at each row start and at each document start inside a row. With a
        ``period`` (every start a multiple of it: the shuffled and sequential orders) the
        segments are read from the :meth:`window_table` in row order; otherwise the rows are
        looked up in ascending order (one sort), their segment starts gathered there, then put
        back in row order by one gather into all batches' ``cu_seqlens``. Both give the same.

        Args:
            row_starts: window starts, a multiple of ``batch_size`` of them.
            seq_len: tokens per row ``T``.
            batch_size: rows per batch ``B``.
            period: the distance between window starts when all are its multiples (``>= seq_len``),
                or ``None``; starts that are not multiples fall back to the search.
        """
        row_starts = np.asarray(row_starts, dtype=np.int64)
        n = len(row_starts)
        if n == 0:
            return []
        table = self.window_table(period, seq_len) if period is not None else None
        found = table.batch_boundaries(row_starts, batch_size) if table is not None else None
        if found is not None:
            return [Documents((c, top, batch_size, seq_len)) for c, top in zip(*found)]
        order, s = _sorted_with_order(row_starts)
        lo, hi, ranges = self._window_bounds(s, seq_len)
        # Sorted row r owns entries [slot[r], slot[r] + seg[r]) of `rel`: its start, then its
        # documents' starts; the start's id (lo - 1) is a placeholder, overwritten.
        seg = hi - lo + 1
        slot = np.cumsum(seg) - seg
        m = int(slot[-1] + seg[-1])
        ids = np.arange(m, dtype=np.int64) + np.repeat(lo - 1 - slot, seg)
        rel = np.empty(m + 1, dtype=np.int64)  # + 1: what each batch's B*T entry gathers, then overwritten
        for k, i, j in ranges:  # ids inside shard k, but for placeholders (>= -1 there: wrap)
            shard = self._shard_starts[k]
            p, q = int(slot[i]), (int(slot[j]) if j < n else m)
            if len(shard):
                np.add(shard[ids[p:q] - self.doc_offsets[k]], self.reader.offset_list[k], out=rel[p:q])
        if sum(j - i for _, i, j in ranges) < n and self.n_documents:
            rest = np.flatnonzero(np.repeat(self._outside(ranges, n), seg))
            rel[rest] = self.starts(np.maximum(ids[rest], 0))
        rel[slot] = s
        # As columns of the row's batch: row order[r] is row order[r] % B of its batch.
        rel[:m] -= np.repeat(s - (order % batch_size) * seq_len, seg)
        rel[m] = 0
        # Back to row order, each batch's entries then its B*T (the extra entry of its last row).
        inv = np.empty(n, dtype=np.int64)
        inv[order] = np.arange(n, dtype=np.int64)
        seg_rows = seg[inv]
        dest = np.cumsum(seg_rows) - seg_rows + np.arange(n, dtype=np.int64) // batch_size
        per = np.add.reduceat(seg_rows, np.arange(0, n, batch_size)) + 1
        ends = np.cumsum(per) - 1
        seg_rows[batch_size - 1 :: batch_size] += 1
        src = np.arange(m + len(per), dtype=np.int64) + np.repeat(slot[inv] - dest, seg_rows)
        cu = rel.astype(np.int32)[np.minimum(src, m)]
        cu[ends] = batch_size * seq_len
        longest = np.maximum.reduceat(np.diff(cu), ends - per + 1).tolist()
        pieces = torch.from_numpy(cu).split(per.tolist())
        return [Documents((c, top, batch_size, seq_len)) for c, top in zip(pieces, longest)]

    def window_documents(self, row_starts: np.ndarray, seq_len: int) -> Documents:
        """The ``doc`` of windows ``[s, s + seq_len)``: segments break at every document start."""
        return self.batch_documents(row_starts, seq_len, len(row_starts))[0]
