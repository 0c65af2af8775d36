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
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torch.utils.data._utils.pin_memory import pin_memory
from torchdata.stateful_dataloader import StatefulDataLoader

from ._ring import SlotRef, SlotRing
from .collate import Collator, split
from .errors import ConfigError, StateMismatchError
from .metrics import RunPublisher
from .metrics import for_loader as metrics_for_loader
from .reader import MemmapReader
from .sampler import PassStart, WindowSampler
from .shards import ShardLister, Source

LOADER_STATE_VERSION = 1
_READER_KEYS = set(inspect.signature(MemmapReader.__init__).parameters) - {"self", "source"}
# Page-cache hints by mode (benchmarks/RESULTS.md). Random windows: MADV_RANDOM, else each
# 2 KiB window faults in up to 8 MiB of readahead (120-150x the bytes used, cold), and ask for
# the pages of the batches 8 steps ahead (a cold cache then reads ~10x faster; the reader
# skips the hints while the pages are cached). Sequential: the kernel's readahead suffices.
_PAGE_HINTS: dict[str, dict[str, Any]] = {
    "shuffle": {"advice": "random", "lookahead": 8},
    "random": {"advice": "random", "lookahead": 8},
    "sequential": {"advice": "sequential", "lookahead": 0},
}
_DATALOADER_KEYS = {"timeout", "worker_init_fn", "multiprocessing_context", "prefetch_factor", "pin_memory_device"}


class _BatchStream(IterableDataset):
    """The worker side: compact batches for this worker's share of one pass."""

    def __init__(self, collator: Collator):
        self.collator = collator
        self.start = PassStart(0, 0, None)
        self.metrics: RunPublisher | None = None  # set by the loader: workers count their batches
        self.ring: SlotRing | None = None  # set by the loader per pass: workers fill its slots

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker_id, workers = (info.id, info.num_workers) if info else (0, 1)
        sampler, gather = self.collator.source, self.collator.gather
        reader, shared = self.collator.reader, info is not None
        if self.metrics is not None:
            gather = self.metrics.gatherer(gather, worker_id if shared else None, self.collator)
        if shared and self.ring is not None:
            gather = _slot_gatherer(gather, self.ring, worker_id)
        steps = sampler.iter_steps(self.start, worker_id, workers)
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



def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


def _slot_gatherer(gather: Any, ring: SlotRing, worker_id: int) -> Any:
    """``gather`` writing batch ``n`` of this worker into its ring slot; returns ``(worker, n)``."""
    count = iter(range(1 << 62))

    def into_slot(starts: np.ndarray, shared: bool) -> SlotRef:
        n = next(count)
        gather(starts, shared=shared, into=ring.acquire(worker_id, n))
        return SlotRef(worker_id, n)

    return into_slot


class StreamtokLoader(StatefulDataLoader):
    """A StatefulDataLoader of ``(x, y)`` batches with a small, portable, exact state.

    Args:
        collator: what to load (its sampler fixes order, rank and batch size).
        num_workers: DataLoader worker processes; the stream is the same for any number.
        pin_memory: pin batches for fast, asynchronous copies to the GPU.
        metrics: publish live counters for ``streamtok-monitor`` (see :mod:`streamtok.metrics`);
            ``None`` (default) means on unless ``STREAMTOK_METRICS=0``.
        **kw: ``timeout``, ``worker_init_fn``, ``multiprocessing_context``,
            ``prefetch_factor`` and ``pin_memory_device``, as for ``DataLoader``.
    """

    def __init__(
        self, collator: Collator, *, num_workers: int = 0, pin_memory: bool = False, metrics: bool | None = None, **kw: Any
    ):
        if kw.pop("persistent_workers", False):
            raise ConfigError(
                "persistent_workers is not supported: one pass over the loader covers all "
                "`epochs` (or streams forever with epochs=None), so workers start once per pass"
            )
        unknown = set(kw) - _DATALOADER_KEYS
        if unknown:
            raise ConfigError(f"unsupported loader option(s) {sorted(unknown)}; accepted: {sorted(_DATALOADER_KEYS)}")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, not {num_workers}")
        if num_workers == 0:
            kw.pop("prefetch_factor", None)
        if collator.source is None:
            raise ConfigError("StreamtokLoader needs a Collator built on a WindowSampler (a reader alone has no order)")
        self.collator = collator
        self._stream = _BatchStream(collator)
        self._metrics = metrics_for_loader(collator, num_workers, metrics)
        self._stream.metrics = self._metrics
        with warnings.catch_warnings():  # torchdata 0.11 calls a deprecated torch API
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            super().__init__(
                self._stream,
                batch_size=None,
                collate_fn=_identity,
                num_workers=num_workers,
                pin_memory=pin_memory,
                in_order=True,
                snapshot_every_n_steps=None,
                **kw,
            )

    def iter_compact(self) -> Iterator[torch.Tensor]:
        """Iterate ``(B, T+1)`` buffers in the stored dtype, advancing the same position.

        :class:`~streamtok.CUDAPrefetcher` uses this to move 2-byte tokens to the GPU and
        split and upcast them there.
        """
        return self._batches(None)

    def _batches(self, finish: Any) -> Iterator[Any]:
        """Batches of one pass as ``finish(buf)`` (``None``: the compact buffer itself).

        Metered as the caller sees them (streamtok.metrics: the wait timed includes the
        split into ``(x, y)``; the pass start is published for the monitor's page replay).
        """
        batches = self._pass(finish)
        if self._metrics is None:
            return batches
        return self._metrics.meter(batches, self.collator.source, start=lambda: self._stream.start)

    def _pass(self, finish: Any) -> Iterator[Any]:
        sampler = self.collator.source
        self._stream.start = sampler.begin_pass()
        # Without workers the DataLoader's fetch machinery adds ~20 µs per batch (a third of
        # the batch's cost) and nothing else: the position is counted here, pinning done below.
        direct = self.num_workers == 0
        # With workers, batches go through shared slots made now, before the workers start:
        # the DataLoader then carries (worker, n) pairs, not tensors (see streamtok._ring).
        ring = self._stream.ring = self._make_ring() if self.num_workers else None
        pin = self.pin_memory and torch.cuda.is_available()
        batches = iter(self._stream) if direct else super().__iter__()
        for buf in batches:
            if ring is not None:
                buf = ring.take(buf, finish, pin=pin)  # finish reads the slot before it is reused
            else:
                buf = buf if finish is None else finish(buf)
                if pin:  # what reaches the caller is pinned, (x, y) included
                    buf = pin_memory(buf)
            sampler.advance()
            yield buf

    def _make_ring(self) -> SlotRing:
        # The DataLoader asks worker w for batch n + prefetch_factor once it has received
        # batch n, so with two slots more a worker does not wait for the trainer to release
        # one (at most briefly at a pass end, when workers that ended pass their requests on).
        slots = (self.prefetch_factor or 2) + 2
        shape = (self.collator.batch_size, self.collator.seq_len + 1)
        return SlotRing(self.num_workers, slots, shape, self.collator.transport_dtype)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]
        return self._batches(functools.partial(split, dtype=self.collator.dtype))

    def __len__(self) -> int:
        sampler = self.collator.source
        steps = sampler.pass_steps(sampler.next_pass())
        if steps is None:
            raise TypeError("an endless loader (epochs=None) has no length")
        return steps

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch received, JSON-serialisable."""
        return {"streamtok": LOADER_STATE_VERSION, "sampler": self.collator.source.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: the next iteration continues right after the saved batch.

        Raises:
            StateMismatchError: the state belongs to another configuration or other data.
        """
        if state_dict.get("streamtok") != LOADER_STATE_VERSION:
            raise StateMismatchError(
                "this is not a streamtok loader state (no 'streamtok' version key); "
                "pass the dict returned by StreamtokLoader.state_dict()"
            )
        self.collator.source.load_state_dict(state_dict["sampler"])


def _lister(source: Source | ShardLister, split_name: str, holdout: int) -> ShardLister:
    lister = source if isinstance(source, ShardLister) else ShardLister(source)
    return lister.split(split_name, holdout)


def loader(
    source: Source | ShardLister,
    *,
    seq_len: int,
    batch_size: int,
    split: str = "train",
    holdout: int = 1,
    mode: str = "shuffle",
    seed: int = 0,
    epochs: int | None = 1,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    dtype: torch.dtype = torch.int64,
    pin_memory: bool = False,
    **kw: Any,
) -> StreamtokLoader:
    """Batches ``(x, y)`` of shape ``(batch_size, seq_len)`` from token shards.

    Args:
        source: a directory, glob, list of paths, or :class:`ShardLister`.
        seq_len: tokens per row ``T``.
        batch_size: rows per batch on this rank ``B``.
        split: ``"train"``, ``"val"`` or ``"all"`` (see :meth:`ShardLister.split`).
        holdout: trailing shards held out for ``"val"`` when none is named ``val``.
        mode: ``"shuffle"`` (every window once per epoch), ``"random"`` (with replacement)
            or ``"sequential"`` (every token once, for validation).
        seed: picks the order; same seed, same batches.
        epochs: epochs per pass over the loader; ``None`` streams forever.
        num_workers: DataLoader workers; the stream does not depend on it.
        rank, world_size: ``None`` reads ``torch.distributed``, then ``RANK``/``WORLD_SIZE``.
        dtype: dtype of ``x`` and ``y``.
        pin_memory: pin batches for asynchronous GPU copies.
        **kw: reader options (``raw_dtype``, ``max_open``, ``advice``, ``lookahead``; the
            last two default by mode, see ``_PAGE_HINTS``), ``vocab_size``, and DataLoader
            options (``prefetch_factor``, ``timeout``, ``worker_init_fn``,
            ``multiprocessing_context``, ``pin_memory_device``); ``metrics=False`` turns off
            the live counters for ``streamtok-monitor`` (see :class:`StreamtokLoader`).
    """
    reader_kw = {k: kw.pop(k) for k in list(kw) if k in _READER_KEYS}
    for key, value in _PAGE_HINTS.get(mode, {}).items():
        reader_kw.setdefault(key, value)
    vocab_size = kw.pop("vocab_size", None)
    reader = MemmapReader(_lister(source, split, holdout), **reader_kw)
    sampler = WindowSampler(
        reader, seq_len=seq_len, mode=mode, seed=seed, epochs=epochs,
        batch_size=batch_size, rank=rank, world_size=world_size,
    )
    collator = Collator(sampler, dtype=dtype, vocab_size=vocab_size)
    return StreamtokLoader(collator, num_workers=num_workers, pin_memory=pin_memory, **kw)


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
