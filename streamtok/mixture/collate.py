"""The mixture's batch stage: what ``loader({name: source}, weights=...)`` hands the DataLoader.

A :class:`Mixture` plays the part a :class:`~streamtok.Collator` plays for one source: its
:class:`~streamtok.mixture.sampler.MixtureSampler` orders the windows, and one reader over
every source's shards gathers them, so the DataLoader, page hints and metrics work unchanged.

With ``documents`` (``"mask"``, ``"bos"``, ``"pack"``) each source's rows are built from its
own documents, found with its own boundary token; the gather and the ``doc`` of each batch are
the document collator's, over one :class:`JointDocumentIndex` that joins the sources' indexes
in the joint reader's shard order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._chain import Stage
from ..collate import Collator
from ..documents.collate import DocumentCollator, warn_skipped
from ..documents.boundary import Boundary
from ..documents.index import DocumentIndex
from ..documents.windowtable import window_period
from ..errors import ConfigError
from ..reader import MemmapReader
from ..shards import ShardLister
from .caps import MaxEpochs
from .sampler import MixtureSampler
from .schedule import Weights
from .units import need_index


class JointDocumentIndex(DocumentIndex):
    """The documents of a mixture's joint reader: each source's index, shard after shard.

    Args:
        reader: the joint reader (every source's shards, in source order).
        parts: each source's :class:`DocumentIndex`, in the same order (its own ``bos_id``).
    """

    def __init__(self, reader: MemmapReader, parts: list[DocumentIndex]):
        # Not DocumentIndex.__init__: the joint reader's shards are every source's, whose
        # boundary tokens may differ; each part resolved its own (documents.boundary).
        self.reader, self.parts, self.bos_id = reader, parts, None
        tokens = {p.boundary.token for p in parts}
        self.boundary = (
            parts[0].boundary if len(tokens) == 1
            else Boundary(None, "per source: " + ", ".join(p.boundary.describe() for p in parts))
        )
        self._shard_starts = self._open()
        counts = np.array([len(s) for s in self._shard_starts], dtype=np.int64)
        self.doc_offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.n_documents = int(self.doc_offsets[-1])
        # Document number where each source's documents begin (for streamtok.locate).
        self.source_docs = np.cumsum([0] + [p.n_documents for p in parts])[:-1].astype(np.int64)

    def _open(self) -> list[np.ndarray]:
        return [starts for part in self.parts for starts in part._shard_starts]

    def window_origins(self) -> tuple[int, ...]:
        """Each source's first token in the joint reader: its windows' grid begins there."""
        return tuple(np.cumsum([0] + [p.reader.n_tokens for p in self.parts[:-1]]).tolist())


class Mixture(Stage):
    """The batch stage of a mixture: a :class:`MixtureSampler` and the gather of one joint reader.

    Used where a :class:`Collator` is (``StreamtokLoader(Mixture(...))``); chained form ``.loader(...)``.

    Args:
        source: the :class:`MixtureSampler`.
        reader: a :class:`MemmapReader` over every source's shards, in source order.
        dtype, vocab_size: as for :class:`Collator`.
        index: the sources' documents over ``reader``, when ``source.documents`` is not ``"stream"``.
    """

    def __init__(
        self, source: MixtureSampler, reader: MemmapReader, *, dtype: Any = None, vocab_size: int | None = None,
        index: JointDocumentIndex | None = None,
    ):
        kw = {} if dtype is None else {"dtype": dtype}
        self.source, self.reader, self.index = source, reader, index
        self.documents = source.documents
        if self.documents == "stream":
            self._collator = Collator(reader, seq_len=source.seq_len, vocab_size=vocab_size, **kw)
        else:
            if index is None:
                raise ConfigError(f"a mixture with documents={self.documents!r} needs its JointDocumentIndex (index=)")
            self._collator = DocumentCollator(
                reader, batch_size=source.batch_size, seq_len=source.seq_len, vocab_size=vocab_size,
                index=index, documents=self.documents, **kw,
            )
            self._collator.source = source  # its steps (and their plans) are the mixture's
            # Each source's windows start at multiples of one period from its first token.
            self._collator.period = window_period(source.mode, source.seq_len) if self.documents == "mask" else None
        self.batch_size, self.seq_len = source.batch_size, source.seq_len
        self.dtype, self.vocab_size = self._collator.dtype, vocab_size
        self.transport_dtype = self._collator.transport_dtype
        self.gather = self._collator.gather
        self.attach = self._collator.attach  # plain: the batch itself; documents: (..., doc)

    def __repr__(self) -> str:
        return f"Mixture(sources={list(self.source.names)}, batch_size={self.batch_size}, seq_len={self.seq_len})"


def build(
    sources: Mapping[str, Any], weights: Weights, *, seq_len: int, batch_size: int, split: str, holdout: int,
    mode: str, seed: int, epochs: int | None, primary: str | None, rank: int | None, world_size: int | None,
    reader_kw: dict[str, Any], dtype: Any, vocab_size: int | None, max_epochs: MaxEpochs | None = None,
    documents: str = "stream", bos_id: int | Mapping[str, int | None] | None = None, block_docs: int | None = None,
) -> Mixture:
    """The :class:`Mixture` for ``loader({name: source, ...}, weights=...)``.

    ``documents``, ``bos_id`` (one for all sources, or ``{name: bos_id}``; ``None``: each
    source's format default) and ``block_docs`` as for one source, applied to each source.
    """
    if not sources:
        raise ConfigError("a mixture needs at least one source")
    if weights is None:
        raise ConfigError(f"a mixture of sources {sorted(sources)} needs weights={{name: weight}}")
    listers = {}
    for name, src in sources.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"mixture source names must be non-empty strings, not {name!r}")
        lister = src if isinstance(src, ShardLister) else ShardLister(src, storage_options=reader_kw.get("storage_options"))
        listers[name] = lister.split(split, holdout)
    bos = _bos_ids(bos_id, listers, documents, block_docs)
    plain = {k: v for k, v in reader_kw.items() if k in ("raw_dtype", "storage_options")}
    readers = {n: MemmapReader(lister, **plain) for n, lister in listers.items()}
    indexes = None
    if need_index(documents):
        indexes = {n: DocumentIndex(r, bos[n], source=n) for n, r in readers.items()}
        for name, index in indexes.items():  # bos and pack refuse this (no row can start); mask still reads
            if documents == "mask" and index.n_documents == 0:
                warnings.warn(
                    f"streamtok: documents='mask' found 0 document starts ({index.boundary.describe()}) "
                    f"in source {name!r} ({readers[name].describe()}): its rows are one segment each, as "
                    "documents='stream'; check its bos_id", UserWarning, stacklevel=3,
                )
    sampler = MixtureSampler(
        readers, weights, seq_len=seq_len, mode=mode, seed=seed, epochs=epochs, primary=primary,
        batch_size=batch_size, rank=rank, world_size=world_size, max_epochs=max_epochs, documents=documents,
        indexes=indexes, **({"block_docs": block_docs} if block_docs is not None else {}),
    )
    if documents in ("bos", "pack") and indexes is not None:  # what one source warns of, each source says
        for name, order in zip(sampler.names, sampler.samplers):
            usable = order.n_samples if documents == "bos" else None
            warn_skipped(indexes[name], seq_len + 1, documents, usable, source=name)
    joint_lister = ShardLister([p for lister in listers.values() for p in lister.paths], storage_options=reader_kw.get("storage_options"))
    for lister in listers.values():  # what listings learned (sizes, ETags) saves the joint reader its HEADs
        joint_lister.objects.update(lister.objects)
    joint = MemmapReader(joint_lister, **reader_kw)
    index = None if indexes is None else JointDocumentIndex(joint, list(indexes.values()))
    return Mixture(sampler, joint, dtype=dtype, vocab_size=vocab_size, index=index)


def _bos_ids(
    bos_id: int | Mapping[str, int | None] | None, listers: Mapping[str, Any], documents: str, block_docs: int | None,
) -> dict[str, int | None]:
    """Each source's boundary token as given (``None``: what its own data says, resolved by its
    :class:`DocumentIndex`: the tokenize manifest beside its shards, else its format), checked."""
    if documents == "stream" and (bos_id is not None or block_docs is not None):
        raise ConfigError("bos_id and block_docs take effect only with documents='mask', 'bos' or 'pack'")
    if block_docs is not None and documents != "pack":
        raise ConfigError(f"block_docs (the packer's buffer) takes effect only with documents='pack', not {documents!r}")
    if isinstance(bos_id, Mapping):
        unknown = sorted(set(bos_id) - set(listers))
        if unknown:
            raise ConfigError(f"bos_id names {unknown}, which are not sources; sources are {sorted(listers)}")
        out = {n: bos_id.get(n) for n in listers}
    else:
        out = dict.fromkeys(listers, bos_id)
    for name, value in out.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
            raise ConfigError(f"bos_id of source {name!r} must be a non-negative token id or None, not {value!r}")
    return {n: None if v is None else int(v) for n, v in out.items()}
