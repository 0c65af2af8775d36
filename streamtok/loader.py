"""The quick path: shards to ``(x, y)`` batches through torchdata's StatefulDataLoader.

Workers each build whole batches for the steps ``j % num_workers == worker_id`` of the pass,
into shared slots made at the start of the pass, and send only ``(worker, n)`` through the
DataLoader (:mod:`streamtok._ring`), which hands them back in order. Without workers the
stream is read directly, skipping the DataLoader's fetch machinery. The trainer's process
counts what it received, so the position, and hence ``state_dict()``, is known without asking
the workers. The state is streamtok's own, a few integers: it restores under another
``num_workers`` or world size, which StatefulDataLoader's worker snapshots cannot.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from ._chain import chained
from ._position import Fields
from ._ring import SlotRef, SlotRing
from .collate import Collator, host_empty, new_buffer, split
from .doc_batches import DocumentCollator, document_collator
from .errors import ConfigError, PassActiveError, StateMismatchError
from .locate import RowOrigin, locate_step, origin_of
from .metrics import RunPublisher
from .metrics import for_loader as metrics_for_loader
from .mixture import Mixture, Weights
from .mixture import build as build_mixture
from .reader import MemmapReader
from .sampler import WindowSampler, as_int, resolve_rank
from .shards import ShardLister, Source

LOADER_STATE_VERSION = 1
_READER_KEYS = set(inspect.signature(MemmapReader.__init__).parameters) - {"self", "source"}
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
_DATALOADER_KEYS = {"timeout", "worker_init_fn", "multiprocessing_context", "prefetch_factor", "pin_memory_device"}


_PASS_BLOB_BYTES = 1 << 16


class _BatchStream(IterableDataset):
    """The worker side: compact batches for this worker's share of one pass.

    Where the pass starts lives in a small buffer (shared memory when there are workers),
    written by the trainer before each pass, so persistent workers (which keep the copy of
    this object they started with) learn each new pass's start and id.
    """

    def __init__(self, collator: Collator, shared: bool):
        self.collator = collator
        # (pass start, pass id), pickled: a PassStart, or a mixture's position (a few ints per source).
        self.pass_blob = new_buffer((1, _PASS_BLOB_BYTES), np.dtype(np.uint8), shared=shared)[0]
        self.pass_blob[:8] = 0  # no pass yet (see current_pass)
        self.metrics: RunPublisher | None = None  # set by the loader: workers count their batches
        self.ring: SlotRing | None = None  # set by the loader: workers fill its slots
        self.pin = False  # set by the loader per pass: without workers, gather into pinned memory

    def set_pass(self, start: Any, pass_id: int) -> None:
        blob = pickle.dumps((start, pass_id))
        if len(blob) + 8 > _PASS_BLOB_BYTES:
            raise ConfigError(f"the pass start takes {len(blob)} bytes, more than {_PASS_BLOB_BYTES - 8}: too many sources")
        view = self.pass_blob.numpy()
        view[8 : 8 + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        view[:8] = np.frombuffer(len(blob).to_bytes(8, "little"), dtype=np.uint8)

    def current_pass(self) -> tuple[Any, int]:
        view = self.pass_blob.numpy()
        n = int.from_bytes(view[:8].tobytes(), "little")
        if n == 0:
            # Someone built their own DataLoader over loader.dataset (accelerate's prepare,
            # Lightning's sampler re-wrap): it would neither split by rank nor keep the state.
            raise ConfigError(
                "this dataset is the inside of a StreamtokLoader and has no pass to read: iterate "
                "the loader itself, not a DataLoader rebuilt over loader.dataset (Accelerate: "
                "streamtok.frameworks.accelerate.prepare_loader; see README 'Training frameworks')"
            )
        return pickle.loads(view[8 : 8 + n].tobytes())

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker_id, workers = (info.id, info.num_workers) if info else (0, 1)
        sampler, gather = self.collator.source, self.collator.gather
        reader, shared = self.collator.reader, info is not None
        start, pass_id = self.current_pass()
        if self.metrics is not None:
            gather = self.metrics.gatherer(gather, worker_id if shared else None, self.collator)
        if shared and self.ring is not None:
            gather = _slot_gatherer(gather, self.ring, worker_id, pass_id)
        elif self.pin and not shared:
            gather = _pinned_gatherer(gather, self.collator)
        steps = sampler.iter_steps(start, worker_id, workers)
        if not reader.lookahead:
            for starts in steps:
                yield gather(starts, shared=shared)
            return
        # The order is known: have the kernel fetch the pages of the next batches now.
        ahead: deque[np.ndarray] = deque()
        for starts in steps:
            if starts.ndim == 2:  # documents="pack" over remote shards: a plan of (row, start, length) pieces
                reader.remote.willneed_spans(reader, starts[:, 1], starts[:, 2])
            else:
                reader.willneed(starts, sampler.window_len)
            ahead.append(starts)
            if len(ahead) > reader.lookahead:
                yield gather(ahead.popleft(), shared=shared)
        while ahead:
            yield gather(ahead.popleft(), shared=shared)


def _forkserver() -> Any:
    """A forkserver context whose server has torch and streamtok imported: workers fork from
    it (no obstore/tokio state in them) and start in tens of ms, not the seconds of a spawn."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "numpy", "streamtok"])
    return ctx


def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


def _slot_gatherer(gather: Any, ring: SlotRing, worker_id: int, pass_id: int) -> Any:
    """``gather`` writing batch ``n`` of this worker into its ring slot; returns ``(worker, n, pass)``."""
    count = iter(range(1 << 62))

    def into_slot(starts: np.ndarray, shared: bool) -> SlotRef:
        n = next(count)
        gather(starts, shared=shared, into=ring.acquire(worker_id, n, pass_id))
        return SlotRef(worker_id, n, pass_id)

    return into_slot


def _pinned_gatherer(gather: Any, collator: Collator) -> Any:
    """``gather`` writing each batch straight into a new page-locked buffer (one copy, not two)."""
    dtype = torch.from_numpy(np.empty(0, dtype=collator.transport_dtype)).dtype

    def into_pinned(starts: np.ndarray, shared: bool) -> torch.Tensor:
        return gather(starts, shared=shared, into=host_empty((len(starts), collator.seq_len + 1), dtype, pin=True))

    return into_pinned


class StreamtokLoader(StatefulDataLoader):
    """A StatefulDataLoader of ``(x, y)`` batches with a small, portable, exact state.

    Also the chained form ``collator.loader(...)``.

    Args:
        collator: what to load (its sampler fixes order, rank and batch size).
        num_workers: DataLoader worker processes; the stream is the same for any number.
        pin_memory: pin batches for fast, asynchronous copies to the GPU (streamtok pins
            each batch's own copy itself, before a worker's slot is released; the
            DataLoader's pin thread is not used).
        persistent_workers: keep the worker processes between passes (e.g. a validation
            loader iterated at every evaluation: no restart, which costs seconds with
            ``multiprocessing_context="spawn"``); the stream is the same either way.
        metrics: publish live counters for ``streamtok-monitor`` (see :mod:`streamtok.metrics`);
            ``None`` (default) means on unless ``STREAMTOK_METRICS=0``.
        **kw: ``timeout``, ``worker_init_fn``, ``multiprocessing_context``,
            ``prefetch_factor`` and ``pin_memory_device``, as for ``DataLoader``; and, as
            StatefulDataLoader users write them, ``in_order=True``, ``drop_last=True`` and
            ``snapshot_every_n_steps`` (what streamtok does anyway; other values are refused
            with the reason).
    """

    def __init__(
        self,
        collator: Collator,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        metrics: bool | None = None,
        **kw: Any,
    ):
        _accept_conventions(kw)
        unknown = set(kw) - _DATALOADER_KEYS
        if unknown:
            raise ConfigError(f"unsupported loader option(s) {sorted(unknown)}; accepted: {sorted(_DATALOADER_KEYS)}")
        num_workers = as_int("num_workers", num_workers, 0)
        if persistent_workers and num_workers == 0:
            raise ConfigError("persistent_workers=True needs num_workers > 0 (as for DataLoader)")
        if num_workers == 0:
            kw.pop("prefetch_factor", None)
        if collator.source is None:
            raise ConfigError("StreamtokLoader needs a Collator built on a WindowSampler (a reader alone has no order)")
        if num_workers and getattr(collator.reader, "remote", None) is not None:
            # The object-store client cannot run in a process forked after it started.
            kw.setdefault("multiprocessing_context", _forkserver())
        self.collator = collator
        self.origin: dict[str, Any] | None = None  # loader()'s settings, for `streamtok locate`
        self._stream = _BatchStream(collator, shared=num_workers > 0)
        self._metrics = metrics_for_loader(collator, num_workers, metrics)
        self._stream.metrics = self._metrics
        self.pin_batches = bool(pin_memory)
        self._pass_id = 0
        # The pass that owns the sampler's position: only its generator may advance it, so a
        # prefetch thread left over from an earlier pass cannot move it (see _batches).
        self._live_pass: object | None = None
        self._position_lock = threading.Lock()
        with warnings.catch_warnings():  # torchdata 0.11 calls a deprecated torch API
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            super().__init__(
                self._stream,
                batch_size=None,
                collate_fn=_identity,
                num_workers=num_workers,
                pin_memory=False,  # its pin thread would pin (worker, n) pairs; pinned below instead
                persistent_workers=bool(persistent_workers),
                in_order=True,
                snapshot_every_n_steps=None,
                **kw,
            )

    # DataLoader's own batch_size is None (streamtok yields whole batches); tooling that reads
    # `loader.batch_size` (Lightning, accelerate) gets the real rows per batch instead.
    @property  # type: ignore[override]
    def batch_size(self) -> int:
        return self.collator.batch_size

    @batch_size.setter
    def batch_size(self, value: Any) -> None:
        pass  # DataLoader.__init__ stores None here

    @property  # type: ignore[override]
    def drop_last(self) -> bool:
        return True  # a partial global step is never yielded

    @drop_last.setter
    def drop_last(self, value: Any) -> None:
        pass

    def iter_compact(self) -> Iterator[torch.Tensor]:
        """Iterate ``(B, T+1)`` buffers in the stored dtype, advancing the same position.

        :class:`~streamtok.CUDAPrefetcher` uses this to move 2-byte tokens to the GPU and
        split and upcast them there. With ``documents``: ``(buf, doc)``, ``doc`` a tuple of its
        compact boundaries (see :class:`streamtok.boundaries.Documents`).
        """
        if isinstance(self.collator, DocumentCollator):
            return self.collator.attach(self, self._batches(None), compact=True)
        return self._batches(None)

    def _batches(self, dtype: torch.dtype | None) -> Iterator[Any]:
        """Batches of one pass: ``(x, y)`` of ``dtype``, or (``None``) the compact buffers.

        Metered as the caller sees them (streamtok.metrics: the wait timed includes the
        split into ``(x, y)``; the pass start is published for the monitor's page replay).
        """
        batches = self._pass(dtype)
        if self._metrics is None:
            return batches
        return self._metrics.meter(batches, self.collator.source, start=self._pass_position)

    def _pass_position(self) -> Any:
        start = self.pass_start  # a window sampler's PassStart; other samplers' starts differ
        return start if hasattr(start, "epoch") and hasattr(start, "offset") else None

    def _pass(self, dtype: torch.dtype | None) -> Iterator[Any]:
        """One pass, unmetered (see :meth:`_batches`).

        A pass holds a token while it runs: a newer pass or :meth:`end_pass` takes it away,
        and from then on the older pass yields nothing and never moves the position again
        (checked under a lock, so not even a prefetch thread that is mid-batch can).
        """
        sampler = self.collator.source
        token = object()
        with self._position_lock:
            self._live_pass = token
            self._pass_id += 1
            start = sampler.begin_pass()
        self._stream.set_pass(start, self._pass_id)
        # Without workers the DataLoader's fetch machinery adds ~20 µs per batch (a third of
        # the batch's cost) and nothing else: the position is counted here.
        direct = self.num_workers == 0
        # With workers, batches go through shared slots: the DataLoader then carries
        # (worker, n) pairs, not tensors (see streamtok._ring). Persistent workers keep the
        # ring they started with; otherwise each pass gets its own, made before its workers.
        if self.num_workers and (self._stream.ring is None or not self.persistent_workers):
            self._stream.ring = self._make_ring()
        ring = self._stream.ring if self.num_workers else None
        pin = self.pin_batches and torch.cuda.is_available()
        # What reaches the caller is pinned, (x, y) included, by the copy that makes it: without
        # workers the compact buffer is gathered into pinned memory, (x, y) split into it.
        finish = None if dtype is None else functools.partial(split, dtype=dtype, pin=pin)
        self._stream.pin = pin and dtype is None
        try:
            batches = iter(self._stream) if direct else super().__iter__()
            for buf in batches:
                if ring is not None:
                    buf = ring.take(buf, finish, pin=pin)  # a private (pinned) copy, then the release
                elif finish is not None:
                    buf = finish(buf)
                with self._position_lock:
                    if self._live_pass is not token:
                        return  # superseded: this pass must not move the position any more
                    sampler.advance()
                yield buf
            with self._position_lock:
                if self._live_pass is token:
                    sampler.pass_ended = True
        finally:
            with self._position_lock:
                if self._live_pass is token:
                    self._live_pass = None

    @property
    def pass_start(self) -> Any:
        """Where the current (or last) pass began, as the sampler's ``begin_pass()`` gave it."""
        return self._stream.current_pass()[0]

    def end_pass(self) -> None:
        """End the running pass, if any: its iterator yields nothing more and never moves the position."""
        with self._position_lock:
            self._live_pass = None

    def _make_ring(self) -> SlotRing:
        # The DataLoader asks worker w for batch n + prefetch_factor once it has received
        # batch n, so with two slots more a worker does not wait for the trainer to release
        # one (at most briefly at a pass end, when workers that ended pass their requests on).
        slots = (self.prefetch_factor or 2) + 2
        shape = (self.collator.batch_size, self.collator.seq_len + 1)
        return SlotRing(self.num_workers, slots, shape, self.collator.transport_dtype)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]
        batches = self._batches(self.collator.dtype)
        if isinstance(self.collator, DocumentCollator):  # (x, y, doc): streamtok.doc_batches
            return self.collator.attach(self, batches, compact=False)
        return batches

    def __len__(self) -> int:
        sampler = self.collator.source
        steps = sampler.pass_steps(sampler.next_pass())
        if steps is None:
            raise TypeError("an endless loader (epochs=None) has no length")
        return steps

    def windows_by_source(self) -> dict[str, int]:
        """Windows each source has given so far, all ranks (a mixture's names; ``{}`` for one source)."""
        per_source = getattr(self.collator.source, "windows_by_source", None)
        return {} if per_source is None else per_source()

    def locate(self, step: int) -> list[RowOrigin]:
        """Where each row of this rank's batch number ``step`` of the run comes from.

        ``step`` counts this rank's batches from the start of the run, 0-based, across
        epochs; the answer is computed from the order, not by replaying it, whether or not
        the loader was iterated (see :mod:`streamtok.locate` for the cost by sampler).

        Raises:
            ConfigError: ``step`` is negative, not an integer, or past the end of the run.
        """
        return locate_step(self.collator, step)

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch received, JSON-serialisable.

        A loader made by :func:`loader` adds ``"origin"``, the settings it was built with
        (sources as absolute paths or URLs, never credentials), so ``streamtok locate`` can
        rebuild it from a checkpoint; loading ignores it.
        """
        with self._position_lock:
            state = {"streamtok": LOADER_STATE_VERSION, "sampler": self.collator.source.state_dict()}
        if self.origin is not None:
            state["origin"] = self.origin
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: the next iteration continues right after the saved batch.

        As StatefulDataLoader does, a state saved after the last batch of a finite pass
        resumes into an empty pass (the next ``iter()`` after it starts the next epoch),
        unless it was saved after the pass ended, which resumes into the next epoch.

        Raises:
            StateMismatchError: the state belongs to another configuration or other data, or
                is corrupt (named key).
            PassActiveError: a pass over this loader is still running (its iterator was
                started and not finished or closed): the loaded position would be overtaken
                by it. Close it first (``it.close()``, or leave the loop), or :meth:`end_pass`.
        """
        version = state_dict.get("streamtok") if isinstance(state_dict, dict) else None
        if type(version) is not int or version != LOADER_STATE_VERSION:  # True == 1, but is no version
            raise StateMismatchError(
                f"this is not a streamtok loader state ('streamtok' version key: {version!r}, not "
                f"{LOADER_STATE_VERSION}); pass the dict returned by StreamtokLoader.state_dict()"
            )
        outer = Fields(state_dict, "loader state")
        outer.keys(("streamtok", "sampler"), ("origin",))  # origin: informational, for streamtok locate
        if "origin" in state_dict:
            outer.dict("origin")
        with self._position_lock:
            if self._live_pass is not None:
                raise PassActiveError(
                    "load_state_dict() while a pass over this loader is still running: its iterator "
                    "would go on from the old position. Close it first (it.close(), or leave the "
                    "loop), or call loader.end_pass(); then load the state and iterate anew"
                )
            self.collator.source.load_state_dict(state_dict["sampler"])


def _accept_conventions(kw: dict[str, Any]) -> None:
    """Take StatefulDataLoader options that mean what streamtok does; refuse the others, saying why."""
    if kw.pop("in_order", True) is not True:
        raise ConfigError(
            "in_order=False is not supported: the state counts the batches the trainer received, "
            "which is exact only when they arrive in order"
        )
    if kw.pop("drop_last", True) is not True:
        raise ConfigError(
            "drop_last=False is not supported: every rank must get the same number of whole "
            "global steps, so the partial last step of an epoch is always dropped"
        )
    every = kw.pop("snapshot_every_n_steps", None)
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ConfigError(f"snapshot_every_n_steps must be a positive integer or None, not {every!r}")
    # Any positive value is accepted: streamtok's state is exact after every batch without
    # worker snapshots, which is what snapshot_every_n_steps=1 asks of StatefulDataLoader.
    for key in ("batch_size", "shuffle", "sampler", "batch_sampler", "collate_fn"):
        if key in kw:
            raise ConfigError(
                f"unsupported loader option {key}=: batches, order and collation come from "
                "the Collator and WindowSampler (streamtok.loader(batch_size=..., mode=...))"
            )


@chained(Collator, "loader")
@chained(Mixture, "loader")
def _loader_form(self: Collator | Mixture, **kw: Any) -> StreamtokLoader:
    """A :class:`StreamtokLoader` over this collator or mixture (keywords as for the loader)."""
    return StreamtokLoader(self, **kw)  # type: ignore[arg-type]


def _lister(source: Source | ShardLister, split_name: str, holdout: int, storage_options: Any = None) -> ShardLister:
    lister = source if isinstance(source, ShardLister) else ShardLister(source, storage_options=storage_options)
    return lister.split(split_name, holdout)


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
    bos_id: int | None = None,
    **kw: Any,
) -> StreamtokLoader:
    """Batches ``(x, y)`` of shape ``(batch_size, seq_len)`` from token shards.

    Args:
        source: a directory, glob, list of paths, or :class:`ShardLister`; or a mixture:
            ``{name: source}`` (see :mod:`streamtok.mixture`).
        weights: a mixture's ``{name: weight}`` or ``[(step, {name: weight}), ...]``.
        primary: the mixture source whose epochs ``epochs`` counts.
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
            ``"pack"`` (rows of whole documents, best-fit; ``block_docs=`` sets the packer's
            buffer, default 1000); other than ``"stream"`` batches are ``(x, y, doc)``,
            see :mod:`streamtok.doc_batches`.
        bos_id: the token that starts a document; ``None``: from the format (50256 for
            GPT-2/uint16 shards, 128000 for llm.c Llama 3 shards, Megatron's ``.idx``).
        **kw: reader options (``raw_dtype``, ``max_open``, ``advice``, ``lookahead``; the
            last two default by mode, see ``_PAGE_HINTS``; for remote shards
            ``storage_options``, ``fetch``, ``cache_dir``, ``cache_limit``, see
            :class:`~streamtok.MemmapReader`, and ``lookahead`` defaults to
            ``REMOTE_LOOKAHEAD``, ``BLOCKS_LOOKAHEAD`` with ``fetch="blocks"``), ``vocab_size``, and DataLoader
            options (``prefetch_factor``, ``timeout``, ``worker_init_fn``,
            ``multiprocessing_context``, ``pin_memory_device``); ``metrics=False`` turns off
            the live counters for ``streamtok-monitor`` (see :class:`StreamtokLoader`).
    """
    origin = origin_of(
        source, weights=weights, primary=primary, seq_len=seq_len, batch_size=batch_size, split=split,
        holdout=holdout, mode=mode, seed=seed, epochs=epochs,
        documents=documents, bos_id=bos_id, **{k: kw[k] for k in ("block_docs", "raw_dtype") if k in kw},
    )
    reader_kw = {k: kw.pop(k) for k in list(kw) if k in _READER_KEYS}
    if _is_remote_source(source):
        hints = {"lookahead": BLOCKS_LOOKAHEAD if reader_kw.get("fetch") == "blocks" else REMOTE_LOOKAHEAD}
    else:
        hints = _PAGE_HINTS.get(mode, {})
    for key, value in hints.items():
        reader_kw.setdefault(key, value)
    if documents == "pack" and not _is_remote_source(source):
        reader_kw["lookahead"] = 0  # a step's plan is pieces, not windows: no page hints (remote: fetched ahead)
    vocab_size = kw.pop("vocab_size", None)
    if group is not None:  # the data-parallel place, for every kind of loader below
        rank, world_size = resolve_rank(rank, world_size, group)
        group = None
    if isinstance(source, Mapping):
        if documents != "stream" or bos_id is not None:
            raise ConfigError("documents= and bos_id= do not work with a mixture yet: use documents='stream'")
        if epochs is _ONE_EPOCH:
            epochs = None if primary is None else 1
        mixture = build_mixture(
            source, weights, seq_len=seq_len, batch_size=batch_size, split=split, holdout=holdout, mode=mode,
            seed=seed, epochs=epochs, primary=primary, rank=rank, world_size=world_size, reader_kw=reader_kw,
            dtype=dtype, vocab_size=vocab_size,
        )
        return _with_origin(StreamtokLoader(mixture, num_workers=num_workers, pin_memory=pin_memory, **kw), origin)  # type: ignore[arg-type]
    if weights is not None or primary is not None:
        raise ConfigError("weights= and primary= are for a mixture: pass source as {name: source, ...}")
    if epochs is _ONE_EPOCH:
        epochs = 1
    reader = MemmapReader(_lister(source, split, holdout, reader_kw.get("storage_options")), **reader_kw)
    if documents != "stream" or bos_id is not None or "block_docs" in kw:  # streamtok.doc_batches
        collator = document_collator(
            reader, documents=documents, bos_id=bos_id, seq_len=seq_len, batch_size=batch_size,
            collate_kw={"dtype": dtype, "vocab_size": vocab_size}, mode=mode, seed=seed, epochs=epochs,
            rank=rank, world_size=world_size, **{k: kw.pop(k) for k in ("block_docs",) if k in kw},
        )
        return _with_origin(StreamtokLoader(collator, num_workers=num_workers, pin_memory=pin_memory, **kw), origin)
    sampler = WindowSampler(
        reader, seq_len=seq_len, mode=mode, seed=seed, epochs=epochs,
        batch_size=batch_size, rank=rank, world_size=world_size, group=group,
    )
    collator = Collator(sampler, dtype=dtype, vocab_size=vocab_size)
    return _with_origin(StreamtokLoader(collator, num_workers=num_workers, pin_memory=pin_memory, **kw), origin)


def _with_origin(built: StreamtokLoader, origin: dict[str, Any]) -> StreamtokLoader:
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
