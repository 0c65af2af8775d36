"""WindowTable: the documents that start inside each aligned window, found without a search.

``documents="mask"`` needs, for every row ``[s, s + T)``, the documents that start inside it
(``s < start < s + T``). The general lookup (:meth:`DocumentIndex.batch_documents`) sorts a
chunk's rows and binary-searches each shard's starts twice per row: ~11 µs a batch of 32 x
1024 in the loader's loop, where the token copies have pushed the index out of the caches.

The shuffled and sequential window orders start every window at a multiple of a *period*
``P`` (``T + 1`` for ``"shuffle"`` and ``"block_shuffle"``, ``T`` for ``"sequential"``), and
windows ``[wP, wP + T)`` never overlap, so each document starts inside at most one window:
window ``w`` holds the documents whose start ``g`` has ``g // P == w`` and ``0 < g % P < T``.
The table keeps, per window, its row's segment starts as columns: ``0``, each such
document's ``g % P`` in order, and ``T`` (its end, the next row's start): ``cols``
(``uint16`` while ``T < 65536``, else ``uint32``), window ``w``'s entries from ``ptr[w]``
(``uint32``). A chunk's boundaries are then two reads per row (``ptr[w]``, ``ptr[w + 1]``:
one cache line) and one gather of columns plus each row's place in its batch, in row order:
no sort, no search, no fix-up, ~25 numpy calls for a whole chunk of 64 batches (~1.5 µs a
batch warm and ~3 in the loop, against ~6 and ~11 for the general lookup). A mixture's
sources each start their windows at multiples of ``P`` from their own first token: its
joint index has one grid of windows per source (``origins``).

Memory, stated: 8 bytes per window of the data plus 2 bytes (4 from ``T = 65536``) per
document, i.e. ~10 bytes per ``T`` tokens for documents of about ``T`` tokens (0.6 MiB for
64M tokens at T=1024, ~100 MiB for 10B). It covers the whole data because a shuffled chunk's
rows fall anywhere in it (a table per block, dropped when cold, would be rebuilt at every
chunk). It is built on the first lookup that needs it (one pass over the document starts,
~3 ms for 65K documents), once per process, and not at all above ``MAX_BYTES`` (the search
stays, as for ``"random"`` windows, whose starts are not aligned).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

MAX_BYTES = 64 << 20  # above this a source keeps the general lookup (~6B tokens at T=1024)


def table_bytes(n_tokens: int, n_documents: int, period: int, seq_len: int) -> int:
    """Bytes the table of ``period``-aligned windows of ``seq_len`` tokens would hold at most."""
    windows = -(-n_tokens // period)
    return 4 * (windows + 1) + (2 if seq_len < 1 << 16 else 4) * (n_documents + 2 * windows)


def window_period(mode: str, seq_len: int) -> int | None:
    """The period of a window order's starts: ``T + 1`` for ``"shuffle"`` and ``"block_shuffle"``,
    ``T`` for ``"sequential"``, ``None`` for ``"random"`` (any start)."""
    return {"shuffle": seq_len + 1, "block_shuffle": seq_len + 1, "sequential": seq_len}.get(mode)


class WindowTable:
    """The documents that start inside each window ``[o + wP, o + wP + T)`` of an index (see the module).

    Args:
        shard_starts: each shard's document starts (ascending, in tokens from the shard's start).
        offsets: the global token position of each shard's first token (and the total).
        period: ``P``, the distance between window starts (``>= seq_len``).
        seq_len: tokens per row ``T``.
        origins: where the window grids begin (``o``): ``(0,)``, or each source's first token
            in a mixture's joint reader (shard starts), ascending.
    """

    def __init__(
        self, shard_starts: list[np.ndarray], offsets: list[int], period: int, seq_len: int,
        origins: tuple[int, ...] = (0,),
    ):
        if not 1 <= seq_len <= period:
            raise ValueError(f"WindowTable: windows of {seq_len} tokens every {period} overlap")
        if not origins or origins[0] != 0 or not set(origins) <= set(offsets):
            raise ValueError(f"WindowTable: window grids must begin at 0 and at shard starts, not at {origins}")
        self.period, self.seq_len = int(period), int(seq_len)
        P, T = self.period, self.seq_len
        # One grid of windows per origin (a mixture's sources): grid g's windows are
        # [origin_g + wP, origin_g + wP + T), numbered from base[g] in the table.
        self.origins = np.array(origins, dtype=np.int64)
        spans = np.diff(np.append(self.origins, int(offsets[-1])))
        counts = -(-spans // P)
        self.base = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.n_windows = int(self.base[-1])
        # Windows a lookup may use: all of the last grid's (nothing follows it), and of the
        # others those whose T tokens end inside their grid (a window across two sources
        # would need the next one's documents: such starts are searched).
        inside = np.where(spans >= T, (spans - T) // P + 1, 0)
        self.limit = np.append(inside[:-1], counts[-1]).astype(np.int64)
        col_dtype = np.uint16 if T < 1 << 16 else np.uint32
        grid_of = np.searchsorted(self.origins, np.asarray(offsets[:-1], dtype=np.int64), side="right") - 1
        windows, cols = [], []
        for k, local in enumerate(shard_starts):  # one shard at a time: 16 bytes a document of it, briefly
            g = int(grid_of[k])
            w, col = np.divmod(np.asarray(local, dtype=np.int64) + (offsets[k] - int(self.origins[g])), P)
            inside_row = (col > 0) & (col < T)
            windows.append(w[inside_row] + self.base[g])
            cols.append(col[inside_row])
        w = np.concatenate(windows) if windows else np.zeros(0, dtype=np.int64)
        # Window w's entries: 0 (its start), its documents' columns in order, T (its end).
        ptr = np.zeros(self.n_windows + 1, dtype=np.int64)
        np.cumsum(np.bincount(w, minlength=self.n_windows) + 2, out=ptr[1:])
        table = np.empty(int(ptr[-1]), dtype=col_dtype)
        table[ptr[:-1]] = 0
        table[ptr[1:] - 1] = T
        table[np.arange(len(w), dtype=np.int64) + 1 + 2 * w] = np.concatenate(cols) if cols else 0
        self.ptr = ptr.astype(np.uint32 if ptr[-1] < 1 << 32 else np.int64)
        self.cols = table

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self.ptr.nbytes + self.cols.nbytes

    def batch_boundaries(self, row_starts: np.ndarray, batch_size: int) -> tuple[list[torch.Tensor], list[int]] | None:
        """``(cu_seqlens, max_seqlen)`` of each batch of ``batch_size`` consecutive rows, or
        ``None`` when a row does not start at a multiple of the period (the caller searches).

        Args:
            row_starts: global token starts of the rows, a multiple of ``batch_size`` of them.
            batch_size: rows per batch ``B``.

        Returns:
            Per batch, ``cu_seqlens`` (int32 over the flattened ``B*T`` tokens: each row's
            start, then its documents' starts, then ``B*T``) and the longest segment.
        """
        P, T, B = self.period, self.seq_len, batch_size
        s = np.asarray(row_starts, dtype=np.int64)
        n = len(s)
        if n == 0:
            return [], []
        if len(self.origins) == 1:
            w, off = np.divmod(s, P)
            # Aligned, and inside the table (a negative start is a huge unsigned window).
            if off.any() or int(w.view(np.uint64).max()) >= self.n_windows:
                return None
        else:  # each row in its grid: the last origin at or before it
            grid = np.zeros(n, dtype=np.intp)
            for origin in self.origins[1:].tolist():
                grid += s >= origin
            w, off = np.divmod(s - self.origins[grid], P)
            if off.any() or bool((w.view(np.uint64) >= self.limit[grid].view(np.uint64)).any()):
                return None
            w += self.base[grid]
        first = self.ptr.take(w)
        # Row r takes its window's entries but the end (T: the next row's start), the last
        # row of a batch its end too (B*T): slots [dest[r], dest[r] + seg[r]) of cu.
        seg = np.subtract(self.ptr.take(w + 1), first, dtype=np.int64)
        seg += _ends_kept(n, B)
        after = np.cumsum(seg)
        dest = after - seg
        src = np.repeat(first - dest, seg)
        src += _arange(int(after[-1]))
        cu = np.repeat(_row_columns(n, B, T), seg)
        cu += self.cols.take(src)
        heads, ends = dest[::B], after[B - 1 :: B]
        longest = np.maximum.reduceat(np.diff(cu), heads).tolist()
        return list(torch.from_numpy(cu).split((ends - heads).tolist())), longest


@functools.lru_cache(maxsize=8)
def _ends_kept(n: int, batch_size: int) -> np.ndarray:
    """Per row, ``-1`` (its window's end entry is dropped) or, for a batch's last row, 0."""
    out = np.full(n, -1, dtype=np.int64)
    out[batch_size - 1 :: batch_size] = 0
    out.flags.writeable = False
    return out


_ARANGE = np.arange(1 << 16, dtype=np.int64)
_ARANGE.flags.writeable = False


def _arange(n: int) -> np.ndarray:
    """``arange(n)`` as a read-only view of one shared array (grown when needed)."""
    global _ARANGE
    if n > len(_ARANGE):
        grown = np.arange(max(n, 2 * len(_ARANGE)), dtype=np.int64)
        grown.flags.writeable = False
        _ARANGE = grown
    return _ARANGE[:n]


@functools.lru_cache(maxsize=8)
def _row_columns(n: int, batch_size: int, seq_len: int) -> np.ndarray:
    """Flat position of each row's first token in its batch: ``(r % B) * T`` (read-only)."""
    out = ((np.arange(n, dtype=np.int64) % batch_size) * seq_len).astype(np.int32)
    out.flags.writeable = False
    return out
