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

import copy
import functools
import pickle
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from ._position import Fields
from ._ring import SlotRef, SlotRing
from .collate import Collator, host_empty, new_buffer, split
from .errors import ConfigError, PassActiveError, StateMismatchError
from .metrics.publish import RunPublisher
from .metrics.publish import for_loader as metrics_for_loader
from .sampler import as_int

LOADER_STATE_VERSION = 1
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
        metrics: publish live counters for ``streamtok-monitor`` (see :mod:`streamtok.metrics.publish`);
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
        compact boundaries (see :class:`streamtok.documents.index.Documents`).
        """
        return self._attach(self._batches(None), compact=True)

    def _batches(self, dtype: torch.dtype | None) -> Iterator[Any]:
        """Batches of one pass: ``(x, y)`` of ``dtype``, or (``None``) the compact buffers.

        Metered as the caller sees them (streamtok.metrics.publish: the wait timed includes the
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
        return self._attach(self._batches(self.collator.dtype), compact=False)

    def _attach(self, batches: Iterator[Any], compact: bool) -> Iterator[Any]:
        """What the collator adds to each batch of the pass (documents: ``doc``), if anything."""
        return self.collator.attach(
            batches, pass_start=lambda: self.pass_start, direct=self.num_workers == 0, compact=compact
        )

    @property
    def metrics(self) -> RunPublisher | None:
        """This loader's live counters for ``streamtok-monitor`` (``None`` with ``metrics=False``)."""
        return self._metrics

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

    def epochs_by_source(self) -> dict[str, float]:
        """Epochs each source has given so far, all ranks, exact: its units over its units an epoch
        (``1.5``: one and a half; a mixture's names, ``{}`` for one source). Packed rows count
        each epoch's own rows (``1.0`` once an epoch is read whole; the first call in an epoch
        packs the rest of it, see :meth:`MixtureSampler.epochs_of`). With ``max_epochs`` a
        source stops at its cap: ``x`` epochs a pass, ``floor(x * n) / n`` exactly."""
        per_source = getattr(self.collator.source, "epochs_by_source", None)
        return {} if per_source is None else per_source()

    def locate(self, step: int) -> list[Any]:
        """:class:`~streamtok.locate.RowOrigin` records: where each row of this rank's batch number ``step`` of the run comes from.

        ``step`` counts this rank's batches from the start of the run, 0-based, across
        epochs; the answer is computed from the order, not by replaying it, whether or not
        the loader was iterated (see :mod:`streamtok.locate` for the cost by sampler).

        Raises:
            ConfigError: ``step`` is negative, not an integer, or past the end of the run.
        """
        from .locate import locate_step  # the inverse of every sampler's order, wings included

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
            state["origin"] = copy.deepcopy(self.origin)  # the caller may edit its checkpoint dict
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
