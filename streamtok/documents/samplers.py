"""Rows made of documents: BOS-aligned windows and best-fit packed rows, each a pure order.

- ``"bos"`` (:class:`DocStartSampler`): a :class:`WindowSampler` whose samples are document
  starts instead of window starts. Sample ``k`` of epoch ``e`` is document ``perm_e(k)``
  (``shuffle``: the keyed permutation, each start once per epoch), and its row is the ``T+1``
  tokens from there (the document, continued by the following ones).
- ``"pack"`` (:func:`pack_block`, :class:`PackSampler`): the epoch's document order is cut
  into blocks of ``block_docs`` documents; each block is packed alone, so row ``k`` is found by
  packing its block, never the blocks before it. In a block, a document of ``T+1`` tokens or
  more fills a row by itself (cropped to it); the others go best-fit: a row takes the longest
  document that fits what is left, and only when none fits is the shortest cropped to fill the
  row. A last row the block cannot fill is dropped. The packer is :mod:`.bestfit`, compiled
  (~0.05 µs per document, against ~0.2 in Python).
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any

import numpy as np

from .._order import KeyedPermutation, hash_key, mix64
from ..sampler import WindowSampler
from .bestfit import packed_pieces
from .boundary import Boundary
from .index import DocumentIndex


def document_order(mode: str, seed: int, epoch: int, k: np.ndarray, n: int) -> np.ndarray:
    """Document ids of samples ``k`` of ``epoch`` out of ``n`` documents (``random``: with replacement).

    Args:
        mode: ``"shuffle"`` (a keyed permutation), ``"random"`` or ``"sequential"``.
        seed, epoch: pick the order.
        k: sample indices in ``[0, n)``.
        n: documents in the order.
    """
    k = np.asarray(k, dtype=np.int64)
    if mode == "sequential":
        return k
    if mode == "shuffle":
        return _permutation(n, hash_key(seed, epoch, 0xD0C5))(k)
    h = mix64(mix64(k.astype(np.uint64) ^ np.uint64(hash_key(seed, epoch, 0xD0C5, 0x5EED))))
    return (h % np.uint64(n)).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _permutation(n: int, key: int) -> KeyedPermutation:
    return KeyedPermutation(n, key)


class RecordedStarts:
    """Mixin: while ``record`` is a deque, each chunk of steps' starts computed is appended to it.

    Without workers the loader gathers in the trainer's process, a chunk of 64 steps' starts at
    a time; the trainer then takes the boundaries' plans from here instead of computing the
    order twice (the keyed permutation is most of a step's order cost).
    """

    record: deque[Any] | None = None

    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        out = super().starts(epoch, samples)  # type: ignore[misc]
        if self.record is not None and out.ndim == 2:  # (steps, batch_size): iter_steps' chunk
            self.record.append(out)
        return out


class MaskSampler(RecordedStarts, WindowSampler):
    """The windows of :class:`WindowSampler`, unchanged (``documents="mask"``): same order, same
    state, plus the boundary token the windows' documents are split at (``config["boundary"]``).

    Args:
        source, seq_len, **kw: as for :class:`WindowSampler`.
        boundary: the token documents start at and where it came from (the index's
            :class:`~streamtok.documents.boundary.Boundary`); ``None``: not recorded.
    """

    def __init__(self, source: Any, seq_len: int, *, boundary: Boundary | None = None, **kw: Any):
        super().__init__(source, seq_len, **kw)
        self.boundary = boundary

    def own_kwargs(self) -> dict[str, Any]:
        return {"boundary": self.boundary}

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.boundary is not None:
            config["boundary"] = self.boundary.token
        return config

    def boundary_now(self) -> tuple[int | None, str] | None:
        return None if self.boundary is None else (self.boundary.token, self.boundary.describe())


class DocStartSampler(RecordedStarts, WindowSampler):
    """Rows that begin at document starts, visited in the sampler's order (``documents="bos"``).

    Args:
        source: the reader.
        seq_len: tokens per row ``T``.
        index: the documents of ``source``.
        **kw: as for :class:`WindowSampler` (``mode``, ``seed``, ``epochs``, ``batch_size``,
            ``rank``, ``world_size``).

    Raises:
        ConfigError: fewer usable document starts than one global step.
    """

    def __init__(self, source: Any, seq_len: int, *, index: DocumentIndex, **kw: Any):
        super().__init__(source, seq_len, **kw)
        self.index = index
        # Documents whose row of T+1 tokens fits before the data's end (starts ascend).
        self.n_samples = int(index.first_at_or_after(np.array([source.n_tokens - self.window_len]), strict=True)[0])
        self.require_step(
            source.describe(), f"document starts ({index.boundary.describe()})",
            "check bos_id, or use a smaller batch or more data",
        )

    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        out = self.index.starts(document_order(self.mode, self.seed, epoch, samples, self.n_samples))
        if self.record is not None and out.ndim == 2:
            self.record.append(out)
        return out

    def own_kwargs(self) -> dict[str, Any]:
        return {"index": self.index}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "documents": "bos", "bos_id": self.index.bos_id, "boundary": self.index.boundary.token}

    def boundary_now(self) -> tuple[int | None, str] | None:
        return self.index.boundary.token, self.index.boundary.describe()


_COVERAGE_CHUNK = 1 << 20  # documents whose starts are read at once (8 MiB)
# Up to this many documents the share is counted exactly (~27 ns a document, measured: 0.1 s);
# beyond, from this many evenly spaced ones (the share is then an estimate, within ~0.1%).
_COVERAGE_EXACT = 4 << 20
_COVERAGE_SAMPLE = 1 << 20


def skipped_share(index: DocumentIndex, window_len: int, documents: str, usable: int | None = None) -> tuple[float, int]:
    """``(share of tokens an epoch never reads, documents longer than a row)`` for bos or pack rows.

    A row holds ``window_len`` tokens from a document start, so the tail of a longer document
    is read by no row. ``"bos"``: rows start at the first ``usable`` documents and run on into
    the next ones, so an epoch reads the union of ``[start, start + window_len)``; the share is
    exact. ``"pack"``: a document longer than a row gives its first ``window_len`` tokens;
    the share counts those tails and the tokens before the first document, a lower bound
    (the packer also crops a short document when nothing else fits a row's end, and drops a
    block's last partial row). Reads the index once, a chunk at a time: O(documents); over
    4Mi documents, estimated from 1Mi evenly spaced ones (the count of long ones too).

    Args:
        index: the documents.
        window_len: tokens per row (``T + 1``).
        documents: ``"bos"`` or ``"pack"``.
        usable: bos: documents a row can start at (those with a full row before the data's end).
    """
    n_tokens, n_docs = index.reader.n_tokens, index.n_documents
    if n_docs == 0 or n_tokens == 0:
        return (1.0 if n_tokens else 0.0), 0
    last = n_docs if usable is None else usable  # documents whose rows are read
    if last > _COVERAGE_EXACT:
        ids = np.linspace(0, last - 1, _COVERAGE_SAMPLE).astype(np.int64)
        nxt = np.full(len(ids), n_tokens, dtype=np.int64)
        inside = ids + 1 < n_docs
        nxt[inside] = index.starts(ids[inside] + 1)
        gaps = nxt - index.starts(ids)
        read = float(np.minimum(gaps, window_len).mean()) * last
        return max(0.0, 1.0 - read / n_tokens), round(float((gaps > window_len).mean()) * last)
    read, long_docs = 0, 0
    for lo in range(0, last, _COVERAGE_CHUNK):
        hi = min(lo + _COVERAGE_CHUNK, last)
        ids = np.arange(lo, min(hi + 1, n_docs), dtype=np.int64)
        starts = index.starts(ids)
        nxt = np.append(starts[1:], n_tokens) if hi == n_docs else starts[1:]
        gaps = nxt[: hi - lo] - starts[: hi - lo]  # tokens until the next document (or the end)
        read += int(np.minimum(gaps, window_len).sum())
        long_docs += int((gaps > window_len).sum())
    if documents == "bos" and last:  # the last row runs on past its document's next start
        end = int(index.starts(np.array([last - 1]))[0])
        nxt = int(index.starts(np.array([last]))[0]) if last < n_docs else n_tokens
        read += min(window_len, n_tokens - end) - min(window_len, nxt - end)
    return 1.0 - read / n_tokens, long_docs


def pack_block(lengths: np.ndarray, cap: int) -> list[list[tuple[int, int]]]:
    """Best-fit rows of one block: per row, ``(document position in block, tokens taken)``.

    The rows of :func:`packed_pieces`, as lists (for tests and tools; the sampler keeps the arrays).

    Args:
        lengths: token count of each document of the block, in block order.
        cap: tokens per row (``T + 1``).
    """
    bounds, docs, takes = packed_pieces(lengths, cap)
    b, d, t = bounds.tolist(), docs.tolist(), takes.tolist()
    return [list(zip(d[lo:hi], t[lo:hi])) for lo, hi in zip(b[:-1], b[1:])]
