"""Batches with document boundaries: ``(x, y, doc)`` for ``documents="mask" | "bos" | "pack"``.

Workers gather the tokens as for windows (``"pack"``: one ``pread`` per piece of a row).
The trainer's process computes each batch's ``doc`` itself from the step's plan (its window
starts, or its packed pieces): without workers the samplers record the starts (the plans)
they compute for the gather, a chunk of 64 steps at a time; with workers this process walks
the same pure order alongside the batches. The boundaries of a chunk of
windows are looked up in the document index at once (:meth:`DocumentIndex.batch_documents`:
rows in ascending order, two ``searchsorted`` per shard touched; ~8 µs per batch of 32 x 1024
with warm caches, about 11 between gathers; for the shuffled and sequential orders, whose
starts are multiples of a period, read from a table of each window's documents instead, ~2 µs
warm and ~3 in the loop:
:mod:`streamtok.documents.windowtable`); those of a chunk of packed plans follow from the
pieces alone (:func:`packed_documents`, ~1 µs a batch). Nothing but the tokens crosses the
worker queue.
"""

from __future__ import annotations

import itertools
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..collate import Collator, new_buffer, split
from ..errors import ConfigError
from ..reader import MemmapReader
from .index import DocumentIndex, Documents
from .pack import PackSampler
from .samplers import DocStartSampler, MaskSampler, skipped_share
from .windowtable import window_period

DOCUMENT_MODES = ("stream", "mask", "bos", "pack")
# bos and pack rows read a document's first T+1 tokens only: warn when an epoch skips more.
SKIPPED_WARN_SHARE = 0.01
_CHUNK_STEPS = 64  # steps whose boundaries are looked up in one vectorised call


class DocumentCollator(Collator):
    """A :class:`Collator` that also knows each step's document boundaries.

    Args:
        source: a :class:`WindowSampler` (``"mask"``), :class:`DocStartSampler` (``"bos"``)
            or :class:`PackSampler` (``"pack"``).
        index: the document index of the sampler's reader.
        documents: the mode.
        **kw: as for :class:`Collator` (``dtype``, ``vocab_size``).
    """

    def __init__(self, source: Any, *, index: DocumentIndex, documents: str, **kw: Any):
        super().__init__(source, **kw)
        self.index = index
        self.documents = documents
        # The period of the window starts (documents="mask" in an aligned order): their
        # boundaries are then read from the index's window table (a mixture sets its own).
        self.period = window_period(source.mode, source.seq_len) if isinstance(source, MaskSampler) else None

    def gather(self, starts: np.ndarray, *, shared: bool = False, into: torch.Tensor | None = None) -> torch.Tensor:
        if self.documents != "pack":
            return super().gather(starts, shared=shared, into=into)
        plan = starts
        if into is None:
            into = new_buffer((self.batch_size, self.seq_len + 1), self.transport_dtype, shared)
        out = into.numpy()
        if self.transport_dtype != self._stored:
            out = out.view(self._stored)
        rows, starts, lengths = plan[:, 0], plan[:, 1], plan[:, 2]
        # Pieces fill the rows in order, so the flattened batch is the pieces one after another:
        # one pread per piece (~55 per 32 rows of 1024), stitched across shard ends, the shards
        # checked after (a rewrite under the loader is refused, never read).
        self.reader.read_pieces(starts, lengths, out.reshape(-1))
        # Both ends: a signed dtype can hold negative ids, which stream, mask and bos refuse too.
        if self.vocab_size is not None and (
            int(out.max()) >= self.vocab_size or (out.dtype.kind != "u" and int(out.min()) < 0)
        ):
            row, col = np.unravel_index(int(np.argmax((out >= self.vocab_size) | (out < 0))), out.shape)
            cols = _columns(rows, lengths, self.batch_size)
            piece = np.flatnonzero(rows == row)[np.searchsorted(cols[rows == row], col, "right") - 1]
            where = np.zeros(self.batch_size, dtype=np.int64)  # row starts that place the bad token right:
            where[row] = starts[piece] - cols[piece]  # _check_range reports where[row] + col
            self._check_range(out, where)
        return into

    def step_documents(self, plan: np.ndarray) -> Documents:
        """The ``doc`` of one step: its window starts, or its packed plan."""
        if self.documents != "pack":
            return self.index.window_documents(plan, self.seq_len)
        return packed_documents([plan], self.batch_size, self.seq_len)[0]

    def chunk_documents(self, plans: Any) -> list[Documents]:
        """The ``doc`` of consecutive steps (a sequence of plans), looked up or built at once."""
        if self.documents == "pack":
            return packed_documents(plans, self.batch_size, self.seq_len)
        # A recorded chunk is one (steps, B) array already: no copy.
        starts = plans.reshape(-1) if isinstance(plans, np.ndarray) else np.concatenate(plans)
        return self.index.batch_documents(starts, self.seq_len, self.batch_size, self.period)

    def attach(
        self, batches: Iterator[Any], *, pass_start: Callable[[], Any], direct: bool, compact: bool
    ) -> Iterator[tuple[Any, ...]]:
        """``(x, y, doc)`` per batch (``compact``: ``(buf, doc)``).

        Without workers the sampler records the starts (packed rows: the plans) of the steps
        gathered here, a chunk at a time, in order; with workers this process walks the same
        pure order alongside, a chunk of steps ahead.
        """
        sampler = self.sampler
        recorded = sampler.record = deque() if direct else None
        plans: Iterator[np.ndarray] | None = None
        ready: deque[Documents] = deque()
        for item in batches:
            if not ready:
                if recorded is not None:
                    ready.extend(self.chunk_documents(recorded.popleft()))
                else:
                    if plans is None:  # the pass began with the first batch
                        plans = sampler.iter_steps(pass_start(), 0, 1)
                    ready.extend(self.chunk_documents(list(itertools.islice(plans, _CHUNK_STEPS))))
            doc = ready.popleft()
            yield (item, doc) if compact else (*item, doc)
            # Let this batch go before the next is made: held here while the next one's
            # (x, y) are allocated, its buffers could not be reused (~3% of a window batch's
            # time at B=32, T=1024: fresh, cache-cold memory for every batch).
            del item, doc

    def __call__(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, Documents]:  # type: ignore[override]
        plan = np.asarray(starts, dtype=np.int64)
        return (*split(self.gather(plan), self.dtype), self.step_documents(plan))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, Documents]]:  # type: ignore[override]
        for plan in self.sampler:
            yield self(plan)


def _columns(rows: np.ndarray, lengths: np.ndarray, batch_size: int) -> np.ndarray:
    """Column where each piece of a packed plan begins in its row (pieces are in row order)."""
    cols = np.cumsum(lengths) - lengths
    return cols - np.repeat(cols[np.searchsorted(rows, np.arange(batch_size))], np.bincount(rows, minlength=batch_size))


def packed_documents(plans: Sequence[np.ndarray], batch_size: int, seq_len: int) -> list[Documents]:
    """The ``doc`` of each packed plan (``(row, start, tokens)`` pieces of ``batch_size`` full rows), at once.

    Every row holds ``T+1`` tokens, so in a step a piece begins at flat position (tokens of
    the step before it) - row, column (that) - row * T; pieces come in row order, so the
    positions ascend. A row's first piece is at column 0; one that begins at column ``T`` is
    only a target (no segment). One pass over the chunk's pieces, then one split: ~10 numpy
    calls per chunk instead of per step.

    Args:
        plans: consecutive steps' plans.
        batch_size, seq_len: the batch shape ``(B, T)``.
    """
    if len(plans) == 0:
        return []
    pieces = np.concatenate(plans) if len(plans) > 1 else plans[0]
    n = np.array([len(p) for p in plans], dtype=np.int64)
    rows, lengths = pieces[:, 0], pieces[:, 2]
    step = np.repeat(np.arange(len(plans), dtype=np.int64), n)
    flat = np.cumsum(lengths) - lengths - step * (batch_size * (seq_len + 1)) - rows
    keep = flat - rows * seq_len < seq_len
    kept_step = step[keep]
    # Step s's kept starts, then its B*T: a kept one moves one slot on per step before it.
    per = np.bincount(kept_step, minlength=len(plans)) + 1
    ends = np.cumsum(per) - 1
    cu = np.empty(int(ends[-1]) + 1, dtype=np.int32)
    cu[np.arange(len(kept_step), dtype=np.int64) + kept_step] = flat[keep]
    cu[ends] = batch_size * seq_len
    longest = np.maximum.reduceat(np.diff(cu), ends - per + 1).tolist()
    return [Documents((c, top, batch_size, seq_len)) for c, top in zip(torch.from_numpy(cu).split(per.tolist()), longest)]


def document_collator(
    reader: MemmapReader, *, documents: str, bos_id: int | None, seq_len: int, batch_size: int,
    block_docs: int = 1000, collate_kw: dict[str, Any], **sampler_kw: Any,
) -> DocumentCollator:
    """The collator of a loader with ``documents`` other than ``"stream"``.

    Args:
        reader: the data.
        documents: ``"mask"``, ``"bos"`` or ``"pack"``.
        bos_id: the boundary token, or ``None`` for what the data says (the tokenize manifest
            beside the shards, else the format; :mod:`streamtok.documents.boundary`).
        seq_len, batch_size: the batch shape.
        block_docs: documents per packed block (``"pack"``).
        collate_kw: ``dtype`` and ``vocab_size``.
        **sampler_kw: ``mode``, ``seed``, ``epochs``, ``rank``, ``world_size``.
    """
    if documents not in DOCUMENT_MODES[1:]:
        if documents == "stream":
            raise ConfigError("bos_id and block_docs take effect only with documents='mask', 'bos' or 'pack'")
        raise ConfigError(f"documents must be one of {DOCUMENT_MODES}, not {documents!r}")
    if block_docs != 1000 and documents != "pack":
        raise ConfigError(f"block_docs (the packer's buffer) takes effect only with documents='pack', not {documents!r}")
    index = DocumentIndex(reader, bos_id)  # checks bos_id; None: the token the data names, or ConfigError
    kw = {"seq_len": seq_len, "batch_size": batch_size, **sampler_kw}
    sampler: Any
    if documents == "mask":
        sampler = MaskSampler(reader, boundary=index.boundary, **kw)
        if index.n_documents == 0:  # bos and pack refuse this (no row can start); mask still reads
            warnings.warn(
                f"streamtok: documents='mask' found 0 document starts ({index.boundary.describe()}) in the "
                f"{reader.n_tokens} tokens of {reader.describe()}: every batch is one segment per row, as "
                "documents='stream'; check bos_id", UserWarning, stacklevel=3,
            )
    elif documents == "bos":
        sampler = DocStartSampler(reader, index=index, **kw)
        warn_skipped(index, sampler.window_len, "bos", sampler.n_samples)
    else:
        sampler = PackSampler(reader, index=index, block_docs=block_docs, **kw)
        warn_skipped(index, sampler.window_len, "pack", None)
    return DocumentCollator(sampler, index=index, documents=documents, **collate_kw)


def warn_skipped(
    index: DocumentIndex, window_len: int, documents: str, usable: int | None, *, source: str | None = None,
) -> None:
    """Warn once (at the loader's creation) when an epoch of these rows skips more than 1% of the tokens.

    Args:
        index: the documents of one source (its reader: ``index.reader``).
        window_len: tokens per row (``T + 1``).
        documents: ``"bos"`` or ``"pack"``.
        usable: bos: documents a row can start at (see :func:`skipped_share`).
        source: a mixture's source name, named in the message (each source warns for itself).
    """
    share, long_docs = skipped_share(index, window_len, documents, usable)
    if share <= SKIPPED_WARN_SHARE:
        return
    reader = index.reader
    bound = "at least " if documents == "pack" else ""
    where = reader.describe() if source is None else f"source {source!r} ({reader.describe()})"
    warnings.warn(
        f"streamtok: documents={documents!r} reads the first seq_len + 1 = {window_len} tokens of each "
        f"document; {long_docs} of the {index.n_documents} documents of {where} are longer, so "
        f"an epoch skips {bound}{share:.1%} of its {reader.n_tokens} tokens. Use a longer seq_len, split "
        "long documents, or documents='mask' (every token, boundaries marked)", UserWarning, stacklevel=4,
    )
