"""Live counters of a loader, published for ``streamtok-monitor`` in another process.

Mechanism: each run gets a directory (under ``$STREAMTOK_RUN_DIR``, default
``$XDG_RUNTIME_DIR/streamtok`` or ``~/.cache/streamtok/runs``) holding

- ``manifest.json``: the static facts (configuration, trainer PID, shard paths), written
  once per change to a temporary name and ``os.replace``d, so a reader never sees half of it;
- ``stats.bin``: a fixed layout of int64 words memory-mapped by every process of the run:
  a header, then one slot per writer (slot 0 the trainer, slot ``1 + w`` DataLoader
  worker ``w``, the last one the training loop behind a background prefetch thread, see
  :class:`Consumed`). A slot has one writer; it increments the slot's ``seq`` word to odd,
  writes the counters, and increments it back to even (a seqlock), so a reader retries a
  torn copy.

An update is a few stores into a ``memoryview`` of the map: ~0.3 µs, no system call (a
JSON rewrite costs 30-160 µs; a loader batch of 32x1024 tokens 40-90 µs). Even so the trainer
does not store per batch: it counts in local variables, times a sample of the batches (see
:class:`Meter`) and stores at most every 5 ms. Workers store one count per batch. The map
outlives its writer: a killed trainer leaves its last values, and the monitor sees the PID
gone. Counters are cumulative; the monitor takes differences for rates. Each pass stores
where it began and where the one before stopped, so the monitor's replay (below) follows a
``break`` and a new ``iter()``.

The pages the reader touched (the denominator of the page-cache hit ratio) are not counted
here: the order of windows is a pure function of the configuration, so the monitor replays
the windows between two published positions and counts their pages itself, exactly, at no
cost to the training process (counting them per batch here measured 1-1.5% of the loader's
throughput at ``num_workers=0``, over the 1% budget).

Metrics never stop training: any I/O error after start-up (the run directory removed, a full
disk) turns them off with one warning (see :class:`RunPublisher`); run directories that are
not this host's, or not streamtok's, are never read as runs nor deleted (:mod:`._runs`).
This module imports neither torch nor numpy, so the monitor can use it.

A mixture's run also publishes, per source, the windows and tokens given so far, the share
its schedule asked for and its weight (a source block per slot, stored with the slot's
totals; :func:`source_report` reads them back in ``MixtureSampler.report()``'s form).

Off with ``streamtok.loader(..., metrics=False)`` or ``STREAMTOK_METRICS=0``.
"""

from __future__ import annotations

import itertools
import mmap
import os
import shutil
import struct
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .. import _atomic
from .layout import (
    BATCHES,
    ENDED_EPOCH,
    ENDED_OFFSET,
    EPOCH,
    HEADER_WORDS,
    ITERATING,
    MAGIC,
    N_SOURCES,
    OFFSET,
    PASS_EPOCH,
    PASS_OFFSET,
    PASSES,
    PID,
    ROLE,
    ROLE_CONSUMER,
    ROLE_TRAINER,
    ROLE_WORKER,
    SEQ,
    SLOT_FIELDS,
    SLOT_WORDS,
    SOURCE_FIELDS,
    SOURCE_WORDS,
    START_NS,
    TOKENS,
    WAIT_NS,
    WORKER_ID,
    SlotWriter,
    StatsReader,
    source_block_words,
    stats_words,
)
from .meter import Consumed, Meter, counting_gather, mixture_sources
from .rundir import (
    KEEP_ENDED,
    LAYOUT_VERSION,
    MANIFEST,
    STATS,
    RunDirError,
    RunInfo,
    identity,
    is_local,
    list_runs,
    pid_alive,
    prune_runs,
    read_manifest,
    run_root,
)

_counter = itertools.count()
__all__ = [  # the publishing side, and what the monitor reads, from one place
    "BATCHES", "ENDED_EPOCH", "ENDED_OFFSET", "EPOCH", "HEADER_WORDS", "ITERATING", "LAYOUT_VERSION", "MAGIC",
    "MANIFEST", "N_SOURCES", "OFFSET", "PASS_EPOCH", "PASS_OFFSET", "PASSES", "PID", "ROLE", "ROLE_CONSUMER",
    "ROLE_TRAINER", "ROLE_WORKER", "SEQ", "SLOT_FIELDS", "SLOT_WORDS", "SOURCE_FIELDS", "SOURCE_WORDS", "START_NS", "STATS", "TOKENS",
    "WAIT_NS", "WORKER_ID", "Consumed", "Meter", "RunDirError", "RunInfo", "RunPublisher", "SlotWriter",
    "StatsReader", "counting_gather", "enabled", "for_loader", "is_local", "list_runs", "loop_slot", "mixture_report",
    "KEEP_ENDED", "pid_alive", "prune_runs", "read_manifest", "run_root", "source_block_words", "source_report", "stats_words",
]


def enabled(flag: bool | None = None) -> bool:
    """Whether to publish: ``flag`` if given, else ``STREAMTOK_METRICS`` (default on)."""
    if flag is not None:
        return bool(flag)
    return os.environ.get("STREAMTOK_METRICS", "1").strip().lower() not in ("0", "false", "no", "off", "")


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # psutil missing or process gone: identity unknown
        return None


def _remove_run(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # never from a forked worker's copy
        shutil.rmtree(path, ignore_errors=True)


class RunPublisher:
    """The trainer's side of a run directory: manifest plus stats slots, opened per process.

    Start-up errors (no run root, a full disk) raise ``OSError`` and :func:`for_loader` turns
    metrics off. After start-up any metrics I/O error (the run directory removed by a tmp
    cleaner or another node's pruning, ``ENOSPC`` on a manifest update) turns this
    publisher off with one warning per process; training goes on, unmetered.

    Args:
        config: static facts for the manifest (JSON-serialisable; a consumer slot needs its
            ``batch_size`` and ``seq_len``).
        n_slots: slots to allocate (1 trainer + one per DataLoader worker).
        consumer: allocate one more slot, the last, for :meth:`consumer`.
        root: parent directory of runs; default :func:`run_root`.
        mixture: a mixture's sampler (``names``, ``report``, ``report_at``, ``windows``):
            the trainer and consumer slots then also store its per-source counts.
    """

    def __init__(
        self, config: dict[str, Any], *, n_slots: int, consumer: bool = False, root: str | None = None,
        mixture: Any = None,
    ):
        self.root = root or run_root()
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        prune_runs(self.root)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.dir = os.path.join(self.root, f"{stamp}-{os.getpid()}-{next(_counter)}")
        os.makedirs(self.dir, mode=0o700)
        self.n_slots = max(1, n_slots) + int(consumer)
        self.consumer_index = self.n_slots - 1 if consumer else None
        self.mixture = mixture
        self.n_sources = 0 if mixture is None else len(mixture.names)
        words = [0] * stats_words(self.n_slots, self.n_sources)
        words[: SOURCE_WORDS + 1] = (
            MAGIC, LAYOUT_VERSION, self.n_slots, SLOT_WORDS, time.time_ns(), self.n_sources, len(SOURCE_FIELDS),
        )
        with _atomic.atomic_write(os.path.join(self.dir, STATS), fsync=False) as f:
            f.write(struct.pack(f"<{len(words)}q", *words))
        self.manifest: dict[str, Any] = {
            "layout_version": LAYOUT_VERSION,
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "created": time.time(),
            **identity(),
            **config,
        }
        _atomic.write_json_atomic(os.path.join(self.dir, MANIFEST), self.manifest, fsync=False)
        self.off = False
        self._pid = -1
        self._map: mmap.mmap | None = None
        self._writers: dict[int, SlotWriter] = {}
        # A loader dropped mid-process (say, a validation loader made per evaluation) takes
        # its run directory with it; at exit the run stays, shown as ended, until pruned.
        self._cleanup = weakref.finalize(self, _remove_run, self.dir, os.getpid())
        self._cleanup.atexit = False

    def __getstate__(self) -> dict[str, Any]:  # workers started by spawn reopen the file
        state = self.__dict__.copy()
        state["_map"], state["_pid"], state["_writers"] = None, -1, {}
        state["mixture"] = None  # workers count batches, not sources
        del state["_cleanup"]  # only the creating process removes the run
        return state

    def _turn_off(self, error: OSError) -> None:
        if not self.off:
            self.off = True
            warnings.warn(f"streamtok metrics are off for {self.dir} (training goes on): {error}", RuntimeWarning, stacklevel=3)

    def update_manifest(self, **facts: Any) -> None:
        """Add facts to the manifest (rewritten atomically; call rarely, never per batch)."""
        if self.off or all(self.manifest.get(k) == v for k, v in facts.items()):
            return
        self.manifest.update(facts)
        try:
            _atomic.write_json_atomic(os.path.join(self.dir, MANIFEST), self.manifest, fsync=False)
        except OSError as e:
            self._turn_off(e)

    def meter(self, batches: Iterator[Any], sampler: Any, *, start: Callable[[], Any] | None = None) -> Iterator[Any]:
        """Wrap the trainer's batch iterator (see :class:`Meter`); ``batches`` itself when off.

        Args:
            batches: what the training loop iterates, as it sees it.
            sampler: the position (``epoch``, ``offset``, ``batch_size``, ``seq_len``).
            start: where the pass began (an object with ``epoch`` and ``offset``), asked at
                its first batch; default: the position when iteration starts.
        """
        slot = self.slot(0, ROLE_TRAINER)
        if slot is not None and not os.path.exists(os.path.join(self.dir, STATS)):
            # Removed under a running loader: say so once here, before this pass's workers
            # start (they inherit `off` and stay quiet), rather than once in each of them.
            self._turn_off(FileNotFoundError(f"{self.dir} was removed"))
            return batches
        if slot is None:
            return batches
        sources = None if self.mixture is None else mixture_sources(self.mixture)
        return iter(Meter(batches, slot, sampler, start=start, sources=sources))

    def consumer(self, state: Callable[[], dict[str, Any]]) -> Callable[[Iterator[Any]], Iterator[Any]] | None:
        """Claim the consumer slot now; return a wrapper metering the loop's batches into it.

        For a prefetcher whose thread iterates the loader (see :class:`Consumed`): call it
        in the training loop's thread, before that thread starts, so that the two threads
        never claim slots at once. ``None`` when the run has no consumer slot or metrics
        are off.

        Args:
            state: the loader state as of the last batch the loop took (the prefetcher's
                ``state_dict``).

        The wrapper takes the batches and, optionally, ``since``: the ``perf_counter_ns``
        at which the loop entered the pass's first ``next()`` (the prefetcher's set-up, an
        earlier thread's stop included, is then the loop's wait).
        """
        if self.consumer_index is None:
            return None
        slot = self.slot(self.consumer_index, ROLE_CONSUMER)
        if slot is None:
            return None
        position = Consumed(self.manifest["batch_size"], self.manifest["seq_len"], state, self.mixture)
        sources = None if self.mixture is None else position.sources
        return lambda batches, since=None: iter(Meter(batches, slot, position, sources=sources, since=since))

    def gatherer(self, gather: Callable[..., Any], worker_id: int | None, collator: Any) -> Callable[..., Any]:
        """``gather`` counting batches into worker ``worker_id``'s slot (as is in the trainer).

        A worker counts the tokens the trainer will count for the batch, ``B * T``.
        """
        remote = getattr(collator.reader, "remote", None)
        if worker_id is None:  # the trainer counts what it delivers (see Meter)
            slot = self.slot(0, ROLE_TRAINER) if remote is not None else None
            return gather if slot is None else network_gather(gather, slot, remote)
        slot = self.slot(1 + worker_id, ROLE_WORKER, worker_id)
        if slot is None:
            return gather
        counted = counting_gather(gather, slot, tokens=collator.batch_size * collator.seq_len)
        return counted if remote is None else network_gather(counted, slot, remote)

    def slot(self, index: int, role: int, worker_id: int = 0) -> SlotWriter | None:
        """Claim slot ``index`` for this process (``None``: no such slot, or metrics off)."""
        if self.off or not 0 <= index < self.n_slots:
            return None
        if self._pid != os.getpid():  # first use in this process (trainer, or a new worker)
            try:
                with open(os.path.join(self.dir, STATS), "r+b") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size != stats_words(self.n_slots, self.n_sources) * 8:
                        raise OSError(f"{f.name} is {size} bytes, not the stats file this run wrote")
                    self._map = mmap.mmap(f.fileno(), 0)
            except OSError as e:  # removed under us (tmp cleaner, another node's pruning)
                self._turn_off(e)
                return None
            self._pid, self._writers = os.getpid(), {}
        writer = self._writers.get(index)
        if writer is None:
            start = (HEADER_WORDS + index * SLOT_WORDS) * 8
            block_n = source_block_words(self.n_sources)
            b0 = (HEADER_WORDS + self.n_slots * SLOT_WORDS + index * block_n) * 8
            view = memoryview(self._map)  # type: ignore[arg-type]
            writer = SlotWriter(view[start : start + SLOT_WORDS * 8].cast("q"), view[b0 : b0 + block_n * 8] if block_n else None)
            writer.claim(role, worker_id)
            self._writers[index] = writer
        return writer


def network_gather(gather: Callable[..., Any], slot: SlotWriter, remote: Any) -> Callable[..., Any]:
    """Wrap a gather over remote shards so that its slot holds the process's network totals
    after each batch (``remote.net_totals()``: a few attribute reads, one seqlock write)."""

    def published(starts: Any, shared: bool = False, **kw: Any) -> Any:
        buf = gather(starts, shared=shared, **kw) if kw else gather(starts, shared=shared)
        slot.network(remote.net_totals())
        return buf

    return published


def for_loader(collator: Any, num_workers: int, flag: bool | None = None, **facts: Any) -> RunPublisher | None:
    """A publisher for a loader over ``collator``, or ``None`` when metrics are off.

    A run directory that cannot be created (read-only home, full disk, a run root that is a
    file) turns metrics off with a warning; training never fails for the dashboard's sake.
    """
    if not enabled(flag):
        return None
    sampler, reader = collator.source, collator.reader
    mixture = sampler if hasattr(sampler, "report_at") else None
    if mixture is not None:  # static: the monitor divides the published counts by these
        facts["mixture"] = {
            "sources": [
                {
                    "name": n, "windows_per_epoch": int(size), "n_tokens": int(s.source.n_tokens),
                    **({"max_epochs": mixture.max_epochs[n]} if n in getattr(mixture, "max_epochs", {}) else {}),
                    # packed rows: size is a bound of an epoch's rows; the slots store the exact epoch
                    **({"epoch_known": False} if not getattr(s, "epoch_size_exact", True) else {}),
                }
                for n, size, s in zip(mixture.names, mixture.sizes, mixture.samplers)
            ],
            "primary": mixture.primary,
            "schedule": [[int(step), {n: float(w) for n, w in zip(mixture.names, ws)}] for step, ws in mixture.phases],
        }
    try:
        config = {
            "mode": sampler.mode,
            "seq_len": int(sampler.seq_len),
            "batch_size": int(sampler.batch_size),
            "seed": int(sampler.seed),
            "epochs": None if sampler.epochs is None else int(sampler.epochs),
            "rank": int(sampler.rank),
            "world_size": int(sampler.world_size),
            "steps_per_epoch": int(sampler.steps_per_epoch),
            # False for packed rows: steps_per_epoch bounds an epoch's steps, it does not count them
            "steps_per_epoch_exact": bool(getattr(sampler, "epoch_size_exact", True)),
            "step_samples": int(sampler.step_samples),
            "num_workers": int(num_workers),
            "n_tokens": int(reader.n_tokens),
            "token_bytes": int(reader.dtype.itemsize),
            "raw_dtype": str(reader.raw_dtype),
            "shards": [
                {"path": _shown_path(i.path), "n_tokens": int(i.n_tokens), "offset": int(i.offset),
                 "size": int(i.offset + i.nbytes)}  # the file's size, as the reader checked it
                for i in reader.infos
            ],
            **facts,
        }
        return RunPublisher(config, n_slots=1 + num_workers, consumer=True, mixture=mixture)
    except OSError as e:
        warnings.warn(f"streamtok metrics are off: cannot publish under {run_root()}: {e}", stacklevel=3)
        return None


def _shown_path(path: str) -> str:
    """A local shard's absolute path; a remote one's URL without its query (signed URLs carry tokens there)."""
    from ..storage.urls import is_remote, redact_queries

    return redact_queries(path) if is_remote(path) else os.path.abspath(path)


def loop_slot(slots: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The slot the training loop writes: the consumer's behind a prefetcher (unless a later
    pass iterates the loader directly), else the trainer's.

    A prefetcher's pass is one pass of the loader too, so the consumer has begun as many
    passes as the trainer's slot unless a pass iterated the loader without it. After the
    loop closed a prefetcher's pass, its thread may still iterate the loader until its
    queue is full: that is still the prefetcher's pass, not the loop's.

    Args:
        slots: :meth:`StatsReader.slots`.
    """
    trainer = next((s for s in slots if s["role"] == ROLE_TRAINER), None)
    consumer = next((s for s in slots if s["role"] == ROLE_CONSUMER), None)
    if consumer and (
        consumer["iterating"] or not (trainer and trainer["iterating"]) or consumer["passes"] >= trainer["passes"]
    ):
        return consumer
    return trainer


def mixture_report(manifest: dict[str, Any], slot: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """A mixture's per-source counts as stored in ``slot``, in ``MixtureSampler.report()``'s form.

    ``None`` when they are unknown: not a mixture, no slot, nothing stored yet (no batch
    counted), or a source block that does not match the manifest's sources.

    Args:
        manifest: the run's checked manifest (``read_manifest(..., full=True)``).
        slot: a slot from :meth:`StatsReader.slot`.
    """
    mix = manifest.get("mixture")
    block = (slot or {}).get("sources")
    if not mix or not block or not slot or not slot["batches"] or len(block["rows"]) != len(mix["sources"]):
        return None
    total = block["windows"]
    return [
        {
            "name": src["name"], "windows": r["windows"], "tokens": r["tokens"],
            "epoch": r["epoch"] if "epoch" in r else _epoch_from_bound(src, r["windows"]),
            "weight": r["weight"], "target": r["target"],
            "share": r["windows"] / total if total else None, "max_epochs": src.get("max_epochs"),
        }
        for src, r in zip(mix["sources"], block["rows"])
    ]


def _epoch_from_bound(src: dict[str, Any], windows: int) -> int | None:
    """A source's epoch from a stats file written before slots stored it: windows over
    windows per epoch, unknown (``None``) for packed rows, whose per-epoch size is a bound."""
    return windows // src["windows_per_epoch"] if src.get("epoch_known", True) else None


def source_report(run_dir: str) -> list[dict[str, Any]] | None:
    """A mixture run's per-source counts as of the last batches the training loop took (see
    :func:`loop_slot`), in ``MixtureSampler.report()``'s form; ``None`` when unknown.

    Args:
        run_dir: a run directory.

    Raises:
        RunDirError: its manifest or stats file is missing or malformed.
    """
    manifest = read_manifest(run_dir, full=True)
    return mixture_report(manifest, loop_slot(StatsReader(run_dir).slots()))
