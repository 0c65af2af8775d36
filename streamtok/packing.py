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
  row. A last row the block cannot fill is dropped. Cost: O(D log D) per block of ``D``
  documents, a few µs per document in Python (~4 per batch row at T=1024).
"""

from __future__ import annotations

import bisect
import functools
from collections import deque
from typing import Any

import numpy as np

from .boundaries import DocumentIndex
from .errors import ConfigError
from ._order import KeyedPermutation, hash_key, mix64
from .sampler import WindowSampler


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
    """The windows of :class:`WindowSampler`, unchanged (``documents="mask"``): same order, same state."""


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
        if self.n_samples < self.step_samples:
            raise ConfigError(
                f"{source.describe()}: {self.n_samples} document starts with {self.window_len} tokens "
                f"after them cannot fill one global step of {self.step_samples} rows; "
                "check bos_id, or use a smaller batch or more data"
            )

    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        out = self.index.starts(document_order(self.mode, self.seed, epoch, samples, self.n_samples))
        if self.record is not None and out.ndim == 2:
            self.record.append(out)
        return out

    def rebatch(self, batch_size: int) -> DocStartSampler:
        other = DocStartSampler(
            self.source, self.seq_len, index=self.index, mode=self.mode, seed=self.seed, epochs=self.epochs,
            batch_size=batch_size, rank=self.rank, world_size=self.world_size,
        )
        other.epoch, other.offset, other.end_epoch = self.epoch, self.offset, self.end_epoch
        return other

    def config(self) -> dict[str, Any]:
        return {**super().config(), "documents": "bos", "bos_id": self.index.bos_id}


def pack_block(lengths: np.ndarray, cap: int) -> list[list[tuple[int, int]]]:
    """Best-fit rows of one block: per row, ``(document position in block, tokens taken)``.

    Args:
        lengths: token count of each document of the block, in block order.
        cap: tokens per row (``T + 1``).
    """
    rows: list[list[tuple[int, int]]] = []
    first: list[int] = []  # block position of each row's first document: the rows' order
    pool = sorted((int(n), i) for i, n in enumerate(lengths.tolist()) if n < cap)
    for i, n in enumerate(lengths.tolist()):
        if n >= cap:
            rows.append([(i, cap)])
            first.append(i)
    sizes = [n for n, _ in pool]
    while pool:
        row: list[tuple[int, int]] = []
        left = cap
        while left and pool:
            j = bisect.bisect_right(sizes, left) - 1  # the longest that fits
            if j < 0:  # nothing fits: crop the shortest to fill the row
                j, take = 0, left
            else:
                take = sizes[j]
            row.append((pool[j][1], take))
            del pool[j], sizes[j]
            left -= take
        if left == 0:
            rows.append(row)
            first.append(row[0][0])
    order = sorted(range(len(rows)), key=first.__getitem__)
    return [rows[r] for r in order]
