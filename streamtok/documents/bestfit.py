"""The best-fit packer of ``documents="pack"``: one block of documents into rows, compiled.

Best fit is sequential by rule (each row takes the longest document that fits what the rows
before it left), so it cannot be vectorised; in Python it was the largest cost of a packed
batch (~0.2 µs per document). :func:`packed_pieces` runs it as a numba-compiled loop (a
union-find over the block's sorted documents finds "the longest that fits" and skips those
taken), compiled once per machine and cached beside this file. Without numba (not installed,
or a build that does not import against this numpy) the same rows come from the Python loop
:func:`packed_pieces_python`; the tests hold the two equal.
"""

from __future__ import annotations

import bisect
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

Pieces = tuple[np.ndarray, np.ndarray, np.ndarray]  # (bounds, docs, takes)


def packed_pieces(lengths: np.ndarray, cap: int) -> Pieces:
    """Best-fit rows of one block as arrays ``(bounds, docs, takes)``: row ``r`` is the pieces
    ``bounds[r]:bounds[r+1]``, each a document's position in the block and the tokens taken.

    A document of ``cap`` tokens or more is a row by itself (cropped to ``cap``). The others
    are sorted by ``(length, position)``; a row opens with the last of them (the longest),
    then takes the last that fits what is left (the longest, of equal ones the latest in the
    block) until the row is full; when none fits, the first (the shortest) is cropped to the
    gap. A last row the pool cannot fill is dropped. Rows come in the block order of their
    first document.

    Args:
        lengths: token count of each document of the block, in block order.
        cap: tokens per row (``T + 1``).
    """
    return _pack(lengths, cap, _kernel() or _pack_python)


def packed_pieces_python(lengths: np.ndarray, cap: int) -> Pieces:
    """:func:`packed_pieces` by the Python loop alone (the reference the compiled loop is held to)."""
    return _pack(lengths, cap, _pack_python)


def _pack(lengths: np.ndarray, cap: int, loop: Callable[..., Pieces]) -> Pieces:
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    m = max(len(lengths), 1)
    short = np.flatnonzero(lengths < cap)
    keys = np.sort(lengths[short] * m + short)  # ascending (length, position), packed in one int
    return loop(keys, m, lengths, cap)


def compiled() -> bool:
    """Whether :func:`packed_pieces` runs compiled here (numba imported and the loop built)."""
    return _kernel() is not None


_UNSET: Any = object()
_compiled: Any = _UNSET


def _kernel() -> Callable[..., Pieces] | None:
    global _compiled
    if _compiled is _UNSET:
        _compiled = None if os.environ.get("STREAMTOK_NUMBA", "1") == "0" else _build()
    return _compiled


def _build() -> Callable[..., Pieces] | None:
    """The compiled loop, or ``None`` where numba cannot be imported (the Python loop then)."""
    try:
        import numba
    except ImportError:  # not installed, or built against another numpy
        return None
    signature = "Tuple((i8[::1], i8[::1], i8[::1]))(i8[::1], i8, i8[::1], i8)"
    try:
        try:
            return numba.njit(signature, cache=True, nogil=True)(_pack_loop)
        except RuntimeError:  # no writable cache location: compile in memory, once per process
            return numba.njit(signature, nogil=True)(_pack_loop)
    except Exception as e:  # noqa: BLE001 - a numba that cannot build here: the same rows, from Python
        warnings.warn(f"streamtok: numba could not compile the best-fit packer ({type(e).__name__}: {e}); "
                      "documents='pack' packs in Python (the same rows, slower)", RuntimeWarning, stacklevel=2)
        return None


def _pack_loop(keys: np.ndarray, m: int, lengths: np.ndarray, cap: int) -> Pieces:  # pragma: no cover (compiled)
    # The pool is keys (sorted): entry i (1-based) is document keys[i-1] % m of length
    # keys[i-1] // m. parent[] is a union-find over entries: parent[i] == i while entry i is
    # in the pool, and a taken entry points below, so find(j) is the last entry <= j still
    # there (0: none). The opener is find(top); "the longest that fits left" is find(count of
    # lengths <= left); the crop takes the lowest entry still there.
    n, n_pool = len(lengths), len(keys)
    lens = keys // m
    parent = np.arange(n_pool + 1)
    got_doc = np.empty(n_pool, np.int64)
    got_take = np.empty(n_pool, np.int64)
    ends = np.zeros(n_pool + 1, np.int64)
    n_got, n_rows, remaining, top, low = 0, 0, n_pool, n_pool, 1
    while remaining:
        i = top
        while parent[i] != i:
            i = parent[i]
        top = i - 1
        parent[i] = i - 1
        remaining -= 1
        got_doc[n_got] = keys[i - 1] - lens[i - 1] * m
        got_take[n_got] = lens[i - 1]
        n_got += 1
        left = cap - lens[i - 1]
        while left and remaining:
            lo, hi = 0, n_pool  # entries with length <= left: the first hi of them
            while lo < hi:
                mid = (lo + hi) >> 1
                if lens[mid] <= left:
                    lo = mid + 1
                else:
                    hi = mid
            r = lo
            while parent[r] != r:
                parent[r] = parent[parent[r]]
                r = parent[r]
            if r:
                take = lens[r - 1]
            else:  # nothing fits: crop the shortest
                while parent[low] != low:
                    low += 1
                r, take = low, left
            parent[r] = r - 1
            remaining -= 1
            got_doc[n_got] = keys[r - 1] - lens[r - 1] * m
            got_take[n_got] = take
            n_got += 1
            left -= take
        if left:  # the pool ran out before this row was full: dropped
            n_got = ends[n_rows]
            break
        n_rows += 1
        ends[n_rows] = n_got
    # Rows in the block order of their first document: each long one alone, the pool's whole.
    first = np.full(n, -1, np.int64)
    n_long = 0
    for p in range(n):
        if lengths[p] >= cap:
            first[p] = n_rows
            n_long += 1
    for r in range(n_rows):
        first[got_doc[ends[r]]] = r
    bounds = np.zeros(n_rows + n_long + 1, np.int64)
    docs = np.empty(n_got + n_long, np.int64)
    takes = np.empty(n_got + n_long, np.int64)
    k, row = 0, 0
    for p in range(n):
        f = first[p]
        if f == n_rows:
            docs[k], takes[k] = p, cap
            k += 1
        elif f >= 0:
            for q in range(ends[f], ends[f + 1]):
                docs[k], takes[k] = got_doc[q], got_take[q]
                k += 1
        else:
            continue
        row += 1
        bounds[row] = k
    return bounds, docs, takes


def _pack_python(keys_array: np.ndarray, m: int, lengths: np.ndarray, cap: int) -> Pieces:
    # One bisect and one pop per document on a list of ints that pack (length, position)
    # as length * m + position; a piece placed is kept as tokens taken * m + position.
    keys = keys_array.tolist()
    got: list[int] = []  # per piece placed, row after row
    ends = [0]  # piece bounds of the full rows
    add, pop, fits, end = got.append, keys.pop, bisect.bisect_right, ends.append
    while keys:
        key = pop()  # nothing in the pool reaches cap: the longest opens the row
        add(key)
        left = cap - key // m
        while left and keys:
            j = fits(keys, left * m + m - 1) - 1  # the last key of length <= left
            if j < 0:  # nothing fits: crop the shortest to fill the row
                add(left * m + pop(0) % m)
                left = 0
            else:
                key = pop(j)
                add(key)
                left -= key // m
        if left:  # the pool ran out before this row was full: dropped
            del got[ends[-1] :]
            break
        end(len(got))
    pool_takes, pool_docs = np.divmod(np.array(got, dtype=np.int64), m)
    long_docs = np.flatnonzero(lengths >= cap)
    pool_bounds = np.array(ends, dtype=np.int64)
    n_long = len(long_docs)
    firsts = np.concatenate((long_docs, pool_docs[pool_bounds[:-1]]))
    counts = np.concatenate((np.ones(n_long, dtype=np.int64), np.diff(pool_bounds)))
    row_at = np.concatenate((np.arange(n_long, dtype=np.int64), n_long + pool_bounds[:-1]))
    order = np.argsort(firsts)  # distinct positions: no ties
    counts = counts[order]
    bounds = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    pick = np.repeat(row_at[order] - bounds[:-1], counts) + np.arange(bounds[-1], dtype=np.int64)
    docs = np.concatenate((long_docs, pool_docs))[pick]
    takes = np.concatenate((np.full(n_long, cap, dtype=np.int64), pool_takes))[pick]
    return bounds, docs, takes
