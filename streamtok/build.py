"""``streamtok.loader(...)``: the common chain, shards to batches, built in one call.

It picks the stages for the options given (a window sampler, a document sampler and
collator, or a mixture) and hands the collator to :class:`~streamtok.dataloader.StreamtokLoader`,
which knows none of them. ``create_dataloaders`` is the ``.npy`` recipe's pair of loaders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._chain import chained
from .collate import Collator
from .dataloader import StreamtokLoader
from .documents.collate import document_collator
from .errors import ConfigError
from .locate import origin_of
from .mixture.collate import Mixture
from .mixture.collate import build as build_mixture
from .mixture.schedule import Weights
from .reader import MemmapReader
from .sampler import WindowSampler, resolve_rank
from .shards import ShardLister, Source

# Page-cache hints by mode (benchmarks/RESULTS.md). Random windows: MADV_RANDOM, else each
# 2 KiB window faults in up to 8 MiB of readahead (120-150x the bytes used, cold), and ask for
# the pages of the batches 8 steps ahead (a cold cache then reads ~10x faster; the reader
# skips the hints while the pages are cached). Sequential: the kernel's readahead suffices.
_PAGE_HINTS: dict[str, dict[str, Any]] = {
    "shuffle": {"advice": "random", "lookahead": 8},
    "block_shuffle": {"advice": "random", "lookahead": 8},
    "random": {"advice": "random", "lookahead": 8},
    "sequential": {"advice": "sequential", "lookahead": 0},
}
# Remote shards (streamtok.storage): fetch the byte ranges of the batches this many steps
# ahead (at 30 ms per request and ~1 ms per batch, 32 steps keep the requests ahead of use).
REMOTE_LOOKAHEAD = 32
# fetch="blocks": the steps announced ahead are the block cache's plan (what to evict, what
# to download next); announcing costs no request, so look further (256 steps of 32 windows:
# 8k window reads planned, ~0.5 MB of plan per process).
BLOCKS_LOOKAHEAD = 256


class _ByMode:
    """A page-hint option left out: chosen by the mode (and by where the shards are)."""

    def __repr__(self) -> str:
        return "by mode"


_BY_MODE: Any = _ByMode()


@chained(Collator, "loader")
@chained(Mixture, "loader")
def _loader_form(self: Collator | Mixture, **kw: Any) -> StreamtokLoader:
    """A :class:`StreamtokLoader` over this collator or mixture (keywords as for the loader)."""
    return StreamtokLoader(self, **kw)  # type: ignore[arg-type]


def _lister(source: Source | ShardLister, split_name: str, holdout: int, storage_options: Any = None) -> ShardLister:
    lister = source if isinstance(source, ShardLister) else ShardLister(source, storage_options=storage_options)
    return lister.split(split_name, holdout)


def _pinned(source: Any, storage_options: Any) -> Any:
    """``source`` with each ``hf://`` string at the commit its branch names now (one ask per repo),
    so the loader reads that commit and its state's origin names it (a resume reads the same bytes)."""
    if isinstance(source, Mapping):
        return {name: _pinned(src, storage_options) for name, src in source.items()}
    if isinstance(source, (list, tuple)):
        return type(source)(_pinned(s, storage_options) for s in source)
    from .storage.urls import scheme_of

    if isinstance(source, str) and scheme_of(source) == "hf":
        from .storage.hub import pin_source
        from .storage.options import as_options

        return pin_source(source, as_options(storage_options))
    return source


def _is_remote_source(source: Any) -> bool:
    """Whether a loader source names objects in a store (then pages need no hints, bytes a lookahead)."""
    from .storage.urls import is_remote

    if isinstance(source, ShardLister):
        source = source.source  # what it was made from (reading .paths could start a download)
    if isinstance(source, Mapping):
        return any(_is_remote_source(s) for s in source.values())
    if isinstance(source, (str, os.PathLike)):
        return is_remote(source)
    return any(is_remote(p) for p in source)


class _DefaultEpochs(int):
    """``epochs`` left at its default: 1 for one source, a stream (``None``) for a mixture."""

    def __repr__(self) -> str:
        return "1"


_ONE_EPOCH = _DefaultEpochs(1)


def loader(
    source: Source | ShardLister | Mapping[str, Source | ShardLister],
    *,
    weights: Weights | None = None,
    primary: str | None = None,
    max_epochs: Mapping[str, float] | None = None,
    seq_len: int,
    batch_size: int,
    split: str = "train",
    holdout: int = 1,
    mode: str = "shuffle",
    seed: int = 0,
    epochs: int | None = _ONE_EPOCH,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    group: Any = None,
    dtype: torch.dtype = torch.int64,
    pin_memory: bool = False,
    documents: str = "stream",
    bos_id: int | Mapping[str, int | None] | None = None,
    block_docs: int | None = None,
    vocab_size: int | None = None,
    raw_dtype: str | Any = "uint16",
    max_open: int | None = None,
    advice: str | None = _BY_MODE,
    lookahead: int = _BY_MODE,
    storage_options: Mapping[str, Any] | None = None,
    fetch: str = "windows",
    cache_dir: str | os.PathLike | None = None,
    cache_limit: int | None = None,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    metrics: bool | None = None,
    **dataloader_kw: Any,
) -> StreamtokLoader:
    """Batches ``(x, y)`` of shape ``(batch_size, seq_len)`` from token shards.

    Args:
        source: a directory, glob, list of paths or URLs, or :class:`ShardLister`; or a
            mixture: ``{name: source}`` (see :mod:`streamtok.mixture`).
        weights: a mixture's ``{name: weight}`` or ``[(step, {name: weight}), ...]``.
        primary: the mixture source whose epochs ``epochs`` counts.
        max_epochs: a mixture's repetition caps ``{name: x}``: source ``name`` reads at most
            ``floor(x * its windows an epoch)`` windows a pass (``x > 0``, fractions allowed),
            then its weight is removed and the others' renormalised (README "Mixtures").
        seq_len: tokens per row ``T``.
        batch_size: rows per batch on this rank ``B``.
        split: ``"train"``, ``"val"`` or ``"all"`` (see :meth:`ShardLister.split`).
        holdout: trailing shards held out for ``"val"`` when none is named ``val``.
        mode: ``"shuffle"`` (every window once per epoch), ``"random"`` (with replacement)
            or ``"sequential"`` (every token once, for validation); ``"block_shuffle"``: every
            window once per epoch, shuffled within pools of 64 blocks of 4 Mi tokens (for
            object storage where requests cost; README "Reading from object storage").
        seed: picks the order; same seed, same batches.
        epochs: epochs per pass over the loader; ``None`` streams forever (default: 1; a
            mixture streams unless ``primary`` is given).
        num_workers: DataLoader workers; the stream does not depend on it.
        rank, world_size: the data-parallel place; ``None`` reads ``torch.distributed``,
            then ``RANK``/``WORLD_SIZE`` (global ranks: with tensor or pipeline parallelism
            pass the data-parallel ones, or ``group``).
        group: a ``torch.distributed`` process group (the data-parallel one) to take
            ``rank``/``world_size`` from.
        dtype: dtype of ``x`` and ``y``.
        pin_memory: pin batches for asynchronous GPU copies.
        documents: ``"stream"`` (windows of the flat token stream), ``"mask"`` (the same
            windows, with document boundaries), ``"bos"`` (rows begin at document starts) or
            ``"pack"`` (rows of whole documents, best-fit); other than ``"stream"`` batches
            are ``(x, y, doc)``, see :mod:`streamtok.documents`. In a mixture every row is
            built from one source's own documents, and the schedule counts that mode's rows
            per source (see :mod:`streamtok.mixture.units`).
        bos_id: the token that starts a document; ``None``: what the data says, in this
            order: the ``streamtok tokenize`` manifest beside the shards (checked against
            them), the format (50256 for llm.c GPT-2 shards, 128000 for llm.c Llama 3 shards,
            Megatron's ``.idx``), 50256 assumed (with a warning) for uint16 without a header;
            none known is a ``ConfigError`` (see :mod:`streamtok.documents.boundary`). A
            mixture takes one for all sources or ``{name: bos_id}`` (a source left out: what
            its own data says, by the same order).
        block_docs: documents the ``"pack"`` packer fits at once (default 1000).
        vocab_size: refuse a batch holding a token id at or above it (named shard and offset).
        raw_dtype, max_open: reader options (headerless shards' dtype; shards kept open).
        advice, lookahead: page-cache hints; left out: by mode (``_PAGE_HINTS``), and for
            remote shards ``REMOTE_LOOKAHEAD`` steps of byte ranges fetched ahead
            (``BLOCKS_LOOKAHEAD`` with ``fetch="blocks"``).
        storage_options, fetch, cache_dir, cache_limit: object storage (see
            :class:`~streamtok.MemmapReader` and README "Reading from object storage").
        persistent_workers, prefetch_factor: as for ``DataLoader``.
        metrics: publish live counters for ``streamtok-monitor``; ``None``: on unless
            ``STREAMTOK_METRICS=0``.
        **dataloader_kw: the other ``DataLoader`` options :class:`StreamtokLoader` takes
            (``timeout``, ``worker_init_fn``, ``multiprocessing_context``,
            ``pin_memory_device``, and ``in_order``/``drop_last``/``snapshot_every_n_steps``
            as streamtok honours them); anything else is refused with the reason.
    """
    if epochs is _ONE_EPOCH and isinstance(source, Mapping):  # a mixture's default: a stream unless primary is given
        epochs = None if primary is None else 1
    source = _pinned(source, storage_options)
    origin = origin_of(
        source, weights=weights, primary=primary, seq_len=seq_len, batch_size=batch_size, split=split,
        holdout=holdout, mode=mode, seed=seed, epochs=epochs, documents=documents, bos_id=bos_id,
        **({"block_docs": block_docs} if block_docs is not None else {}),
        **({"raw_dtype": raw_dtype} if raw_dtype != "uint16" else {}),
        **({"max_epochs": max_epochs} if max_epochs is not None else {}),
    )
    reader_kw: dict[str, Any] = {
        "raw_dtype": raw_dtype, "max_open": max_open, "storage_options": storage_options, "fetch": fetch,
        "cache_dir": cache_dir, "cache_limit": cache_limit,
    }
    if _is_remote_source(source):
        hints: dict[str, Any] = {"lookahead": BLOCKS_LOOKAHEAD if fetch == "blocks" else REMOTE_LOOKAHEAD}
    else:
        hints = _PAGE_HINTS.get(mode, {})
    reader_kw["advice"] = hints.get("advice") if advice is _BY_MODE else advice
    reader_kw["lookahead"] = hints.get("lookahead", 0) if lookahead is _BY_MODE else lookahead
    if documents == "pack" and not _is_remote_source(source):
        reader_kw["lookahead"] = 0  # a step's plan is pieces, not windows: no page hints (remote: fetched ahead)
    if group is not None:  # the data-parallel place, for every kind of loader below
        rank, world_size = resolve_rank(rank, world_size, group)
    loader_kw: dict[str, Any] = {
        "num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": persistent_workers,
        "metrics": metrics, **dataloader_kw,
    }
    if prefetch_factor is not None:
        loader_kw["prefetch_factor"] = prefetch_factor
    if isinstance(source, Mapping):
        collator: Any = build_mixture(
            source, weights, seq_len=seq_len, batch_size=batch_size, split=split, holdout=holdout, mode=mode,
            seed=seed, epochs=epochs, primary=primary, rank=rank, world_size=world_size, reader_kw=reader_kw,
            dtype=dtype, vocab_size=vocab_size, max_epochs=max_epochs, documents=documents, bos_id=bos_id,
            block_docs=block_docs,
        )
    else:
        if weights is not None or primary is not None or max_epochs is not None:
            raise ConfigError(
                "weights=, primary= and max_epochs= are for a mixture: pass source as {name: source, ...} "
                "(one source's epochs are epochs=)"
            )
        if isinstance(bos_id, Mapping):
            raise ConfigError("bos_id={name: id} is for a mixture: pass source as {name: source, ...}, or one bos_id")
        if epochs is _ONE_EPOCH:
            epochs = 1
        reader = MemmapReader(_lister(source, split, holdout, storage_options), **reader_kw)
        if documents != "stream" or bos_id is not None or block_docs is not None:
            collator = document_collator(
                reader, documents=documents, bos_id=bos_id, seq_len=seq_len, batch_size=batch_size,
                collate_kw={"dtype": dtype, "vocab_size": vocab_size}, mode=mode, seed=seed, epochs=epochs,
                rank=rank, world_size=world_size, **({"block_docs": block_docs} if block_docs is not None else {}),
            )
        else:
            sampler = WindowSampler(
                reader, seq_len=seq_len, mode=mode, seed=seed, epochs=epochs,
                batch_size=batch_size, rank=rank, world_size=world_size,
            )
            collator = Collator(sampler, dtype=dtype, vocab_size=vocab_size)
    built = StreamtokLoader(collator, **loader_kw)
    built.origin = origin
    return built


def create_dataloaders(
    train_data_path: str | os.PathLike | Sequence[str],
    val_data_path: str | os.PathLike | Sequence[str] | None,
    batch_size: int,
    max_length: int,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    seed: int = 0,
) -> tuple[StreamtokLoader, StreamtokLoader | None]:
    """``(train_loader, val_loader)`` for the ``.npy`` recipe: one file (or set) per split.

    The training loader shuffles and reshuffles on every pass; the validation loader reads
    every token once, in order.

    Args:
        train_data_path: the training tokens (a ``.npy`` or ``.bin`` file, a directory, a glob).
        val_data_path: the validation tokens, or ``None`` for no validation loader.
        batch_size: rows per batch.
        max_length: tokens per row ``T``.
        num_workers: DataLoader workers of each loader.
        prefetch_factor: batches each worker prepares ahead (with workers).
        seed: the shuffle order.
    """
    common: dict[str, Any] = {"seq_len": max_length, "batch_size": batch_size, "split": "all", "num_workers": num_workers}
    if num_workers and prefetch_factor is not None:
        common["prefetch_factor"] = prefetch_factor
    train = loader(train_data_path, mode="shuffle", seed=seed, **common)
    val = None if val_data_path is None else loader(val_data_path, mode="sequential", seed=seed, **common)
    return train, val
