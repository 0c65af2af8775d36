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

from . import _atomic
from ._runs import (
    LAYOUT_VERSION,
    MANIFEST,
    STATS,
    RunDirError,
    RunInfo,
    identity,
    list_runs,
    pid_alive,
    prune_runs,
    read_manifest,
    run_root,
)

MAGIC = 0x5354_4D45_5452_4943  # "STMETRIC"
HEADER_WORDS = 8  # magic, version, n_slots, slot_words, created_ns, 3 spare
SLOT_FIELDS = (
    "seq",  # seqlock word: odd while the writer is inside an update
    "pid",
    "role",  # ROLE_TRAINER, ROLE_WORKER or ROLE_CONSUMER; 0 = never claimed
    "worker_id",
    "batches",  # trainer, consumer: batches handed out by the loader / taken by the loop; worker: gathered
    "tokens",  # trainer, consumer: input tokens (B*T per batch); worker: tokens gathered (B*(T+1))
    "wait_ns",  # trainer: time spent inside next() on the loader; consumer: on the prefetcher
    "epoch",
    "offset",  # samples into the epoch after the last delivered batch
    "start_ns",  # time.time_ns() when the slot was claimed
    "iterating",  # 1 inside a pass over the loader, 0 between passes
    "passes",  # passes begun (iterations over the loader)
    "pass_epoch",  # where the current (or last) pass began
    "pass_offset",
    "ended_epoch",  # where the pass before it stopped (the monitor replays up to here, then
    "ended_offset",  # restarts at the pass start; a `break` leaves the rest of an epoch unread)
)
SLOT_WORDS = len(SLOT_FIELDS)
(SEQ, PID, ROLE, WORKER_ID, BATCHES, TOKENS, WAIT_NS, EPOCH, OFFSET, START_NS, ITERATING, PASSES,
 PASS_EPOCH, PASS_OFFSET, ENDED_EPOCH, ENDED_OFFSET) = range(SLOT_WORDS)
ROLE_TRAINER, ROLE_WORKER, ROLE_CONSUMER = 1, 2, 3
_counter = itertools.count()
__all__ = [
    "LAYOUT_VERSION", "MANIFEST", "STATS", "Consumed", "Meter", "RunDirError", "RunInfo", "RunPublisher",
    "SlotWriter", "StatsReader", "counting_gather", "enabled", "for_loader", "list_runs", "pid_alive",
    "prune_runs", "read_manifest", "run_root",
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


class SlotWriter:
    """The one writer of one slot, in the process that owns it; every update is a seqlock write.

    Counters live in Python ints and are only stored (never read back) into the map: a
    store into a ``memoryview`` costs ~30 ns, a read-modify-write twice that.
    """

    def __init__(self, words: memoryview):
        self.w = words
        self.seq = self.batches = self.tokens = self.wait_ns = self.passes = 0
        self.epoch = self.offset = 0  # the position last stored

    def claim(self, role: int, worker_id: int) -> None:
        w = self.w
        self.seq = (w[SEQ] + 1) | 1  # odd while writing, even if a killed writer left it odd
        w[SEQ] = self.seq
        for i in range(1, SLOT_WORDS):  # a new process starts its counters from zero
            w[i] = 0
        w[PID], w[ROLE], w[WORKER_ID], w[START_NS] = os.getpid(), role, worker_id, time.time_ns()
        self.seq += 1
        w[SEQ] = self.seq

    def publish(self, batches: int, tokens: int, wait_ns: int, epoch: int, offset: int) -> None:
        """Trainer: totals so far (batches and tokens handed out, time waited) and the position."""
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        w[BATCHES] = self.batches = batches
        w[TOKENS] = self.tokens = tokens
        w[WAIT_NS] = self.wait_ns = wait_ns
        w[EPOCH] = self.epoch = epoch
        w[OFFSET] = self.offset = offset
        w[SEQ] = self.seq = seq + 2

    def new_pass(self, start_epoch: int, start_offset: int) -> None:
        """Trainer: a pass began at ``(start_epoch, start_offset)``; the last one stopped where
        the position was last stored. One write, so a reader sees all of it or none."""
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        self.passes += 1
        w[PASSES] = self.passes
        w[ENDED_EPOCH], w[ENDED_OFFSET] = self.epoch, self.offset
        w[PASS_EPOCH], w[PASS_OFFSET] = start_epoch, start_offset
        w[EPOCH] = self.epoch = start_epoch
        w[OFFSET] = self.offset = start_offset
        w[SEQ] = self.seq = seq + 2

    def gathered(self, tokens: int) -> None:
        """Worker: one more batch of ``tokens`` tokens gathered."""
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        self.batches += 1
        self.tokens += tokens
        w[BATCHES] = self.batches
        w[TOKENS] = self.tokens
        w[SEQ] = self.seq = seq + 2

    def set_iterating(self, on: bool) -> None:
        """Trainer: inside a pass over the loader (``True``) or between passes."""
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        w[ITERATING] = int(on)
        w[SEQ] = self.seq = seq + 2


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
    """

    def __init__(self, config: dict[str, Any], *, n_slots: int, consumer: bool = False, root: str | None = None):
        self.root = root or run_root()
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        prune_runs(self.root)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.dir = os.path.join(self.root, f"{stamp}-{os.getpid()}-{next(_counter)}")
        os.makedirs(self.dir, mode=0o700)
        self.n_slots = max(1, n_slots) + int(consumer)
        self.consumer_index = self.n_slots - 1 if consumer else None
        words = [0] * (HEADER_WORDS + self.n_slots * SLOT_WORDS)
        words[:5] = (MAGIC, LAYOUT_VERSION, self.n_slots, SLOT_WORDS, time.time_ns())
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
        return batches if slot is None else iter(Meter(batches, slot, sampler, start=start))

    def consumer(self, state: Callable[[], dict[str, Any]]) -> Callable[[Iterator[Any]], Iterator[Any]] | None:
        """Claim the consumer slot now; return a wrapper metering the loop's batches into it.

        For a prefetcher whose thread iterates the loader (see :class:`Consumed`): call it
        in the training loop's thread, before that thread starts, so that the two threads
        never claim slots at once. ``None`` when the run has no consumer slot or metrics
        are off.

        Args:
            state: the loader state as of the last batch the loop took (the prefetcher's
                ``state_dict``).
        """
        if self.consumer_index is None:
            return None
        slot = self.slot(self.consumer_index, ROLE_CONSUMER)
        if slot is None:
            return None
        position = Consumed(self.manifest["batch_size"], self.manifest["seq_len"], state)
        return lambda batches: iter(Meter(batches, slot, position))

    def gatherer(self, gather: Callable[..., Any], worker_id: int | None, collator: Any) -> Callable[..., Any]:
        """``gather`` counting batches into worker ``worker_id``'s slot (as is in the trainer).

        A worker counts the tokens the trainer will count for the batch, ``B * T``.
        """
        if worker_id is None:  # the trainer counts what it delivers (see Meter)
            return gather
        slot = self.slot(1 + worker_id, ROLE_WORKER, worker_id)
        if slot is None:
            return gather
        return counting_gather(gather, slot, tokens=collator.batch_size * collator.seq_len)

    def slot(self, index: int, role: int, worker_id: int = 0) -> SlotWriter | None:
        """Claim slot ``index`` for this process (``None``: no such slot, or metrics off)."""
        if self.off or not 0 <= index < self.n_slots:
            return None
        if self._pid != os.getpid():  # first use in this process (trainer, or a new worker)
            try:
                with open(os.path.join(self.dir, STATS), "r+b") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size != (HEADER_WORDS + self.n_slots * SLOT_WORDS) * 8:
                        raise OSError(f"{f.name} is {size} bytes, not the stats file this run wrote")
                    self._map = mmap.mmap(f.fileno(), 0)
            except OSError as e:  # removed under us (tmp cleaner, another node's pruning)
                self._turn_off(e)
                return None
            self._pid, self._writers = os.getpid(), {}
        writer = self._writers.get(index)
        if writer is None:
            start = (HEADER_WORDS + index * SLOT_WORDS) * 8
            writer = SlotWriter(memoryview(self._map)[start : start + SLOT_WORDS * 8].cast("q"))  # type: ignore[index]
            writer.claim(role, worker_id)
            self._writers[index] = writer
        return writer


class Meter:
    """The trainer's side: iterates the loop's batches, timing the training loop's wait.

    A batch's wait is all the time the loop spends inside ``next()``: from the moment it
    asks for a batch until it holds it, the split into ``(x, y)`` and the first batch's
    worker start included (with workers, mostly the queue wait; without, the gather itself).
    Clock reads are what cost here (in a VM, cold after each batch's 64 KiB of copying), so
    only every ``k``-th batch is timed and stands for ``k`` batches; ``k`` adapts so that
    timed batches come about every 1-4 ms: every batch when the loop is slow (a real model),
    1 in 16-64 when the loader runs flat out. Totals are stored into the slot at most every
    ``PUBLISH_NS`` (5 ms) and at the end of the pass; ``batches`` has advanced the position
    past each batch before handing it out, so position and count always match. At its
    first batch (or its end, if empty) a pass stores where it began, with the pass count.
    Per untimed batch: one generator step, a test and an add. The same class meters a
    background prefetcher's iterator for the training loop (see :class:`Consumed`).

    Args:
        batches: the batches as the loop receives them.
        slot: the slot to write.
        sampler: ``batch_size``, ``seq_len`` and the position ``epoch``, ``offset``.
        start: where the pass began (``epoch``, ``offset``), asked at its first batch;
            default: the position when iteration starts.
    """

    PUBLISH_NS = 5_000_000
    MAX_STRIDE = 64

    def __init__(self, batches: Iterator[Any], slot: SlotWriter, sampler: Any, *, start: Callable[[], Any] | None = None):
        self.batches, self.slot, self.sampler, self.start = batches, slot, sampler, start

    def _begin(self, entry: tuple[int, int]) -> None:
        where = self.start() if self.start is not None else None
        self.slot.new_pass(*((where.epoch, where.offset) if where is not None else entry))

    def __iter__(self) -> Iterator[Any]:
        clock, slot, s = time.perf_counter_ns, self.slot, self.sampler
        tokens = s.batch_size * s.seq_len
        # Totals continue from earlier passes in this process (the slot is claimed once).
        n, wait, tokens0, n0 = slot.batches, slot.wait_ns, slot.tokens, slot.batches
        entry, begun = (s.epoch, s.offset), False
        slot.set_iterating(True)
        stride, timed_at = 1, n  # time batch number n + 1 (the first), then every `stride`
        t0 = last = clock()
        due = t0 + self.PUBLISH_NS
        try:
            for buf in self.batches:
                if t0:
                    t1 = clock()
                    # Stands for `stride` batches, but they cannot have waited longer than
                    # they took (a timed batch that was preempted must not count 64 times).
                    wait += min((t1 - t0) * stride, t1 - last)
                    if t1 - last < 1_000_000 and stride < self.MAX_STRIDE:
                        stride *= 2
                    elif t1 - last > 4_000_000 and stride > 1:
                        stride //= 2
                    last, t0 = t1, 0
                    if not begun:
                        begun = True
                        self._begin(entry)
                    n += 1
                    if t1 >= due:
                        due = t1 + self.PUBLISH_NS
                        slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset)
                else:
                    n += 1
                yield buf
                if n - timed_at >= stride:
                    timed_at, t0 = n, clock()
        finally:  # end of the pass, or left early (break, exception, close)
            if not begun:
                self._begin(entry)
            slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset)
            slot.set_iterating(False)


class Consumed:
    """The position a consumer :class:`Meter` publishes: that of the training loop.

    ``CUDAPrefetcher(background=True)`` iterates the loader on its own thread, so the
    loader's :class:`Meter` (slot 0) times that thread's wait for the DataLoader, and its
    count and position run ahead of the loop by the batches in flight. A second Meter,
    around the prefetcher's iterator in the training loop's thread, writes the consumer
    slot: the loop's wait inside ``next()``, the batches it took, and their position, from
    ``state()`` (the prefetcher's state as of the last batch handed out). It samples as the
    loader's Meter does, so it costs the loop the same per batch (a generator step, a test
    and an add), small next to the queue get it times; the position is read only when the
    totals are stored (at most every 5 ms).

    Args:
        batch_size: rows per batch ``B``.
        seq_len: tokens per row ``T`` (a batch counts ``B * T`` tokens, as the loader's).
        state: the loader state as of the last batch the loop took.
    """

    def __init__(self, batch_size: int, seq_len: int, state: Callable[[], dict[str, Any]]):
        self.batch_size, self.seq_len, self._state = batch_size, seq_len, state

    @property
    def epoch(self) -> int:
        return int(self._state()["sampler"]["epoch"])

    @property
    def offset(self) -> int:
        return int(self._state()["sampler"]["offset"])


def for_loader(collator: Any, num_workers: int, flag: bool | None = None, **facts: Any) -> RunPublisher | None:
    """A publisher for a loader over ``collator``, or ``None`` when metrics are off.

    A run directory that cannot be created (read-only home, full disk, a run root that is a
    file) turns metrics off with a warning; training never fails for the dashboard's sake.
    """
    if not enabled(flag):
        return None
    sampler, reader = collator.source, collator.reader
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
            "step_samples": int(sampler.step_samples),
            "num_workers": int(num_workers),
            "n_tokens": int(reader.n_tokens),
            "token_bytes": int(reader.dtype.itemsize),
            "raw_dtype": str(reader.raw_dtype),
            "shards": [
                {"path": os.path.abspath(i.path), "n_tokens": int(i.n_tokens), "offset": int(i.offset),
                 "size": os.path.getsize(i.path)}
                for i in reader.infos
            ],
            **facts,
        }
        return RunPublisher(config, n_slots=1 + num_workers, consumer=True)
    except OSError as e:
        warnings.warn(f"streamtok metrics are off: cannot publish under {run_root()}: {e}", stacklevel=3)
        return None


def counting_gather(gather: Callable[..., Any], slot: SlotWriter, *, tokens: int) -> Callable[..., Any]:
    """Wrap a worker's ``collator.gather`` so that its slot counts the batches it builds."""

    def counted(starts: Any, shared: bool = False, **kw: Any) -> Any:
        buf = gather(starts, shared=shared, **kw) if kw else gather(starts, shared=shared)
        slot.gathered(tokens)
        return buf

    return counted


# -- reading side (the monitor) -------------------------------------------------------------


class StatsReader:
    """Consistent copies of a run's slots (a torn copy is retried; a writer killed mid-update
    leaves an odd ``seq``, and its last values are returned after a few retries).

    Raises:
        RunDirError: the stats file is missing, empty, or not of this layout.
    """

    def __init__(self, run_dir: str):
        path = os.path.join(run_dir, STATS)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER_WORDS * 8:
                    raise RunDirError(f"{path}: {size} bytes, shorter than a stats header ({HEADER_WORDS * 8})")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise RunDirError(f"{path}: cannot read the run's stats: {e}") from e
        words = memoryview(self._map).cast("q")
        magic, version, n_slots, slot_words = words[0], words[1], words[2], words[3]
        if magic != MAGIC or version != LAYOUT_VERSION or slot_words != SLOT_WORDS:
            raise RunDirError(f"{path}: not a streamtok stats file of layout {LAYOUT_VERSION}")
        if n_slots <= 0 or len(words) != HEADER_WORDS + n_slots * SLOT_WORDS:
            raise RunDirError(f"{path}: {len(words) * 8} bytes do not hold the {n_slots} slots its header says")
        self.n_slots = n_slots
        self._words = words

    def slot(self, index: int, retries: int = 1000) -> dict[str, int]:
        """A consistent copy of slot ``index`` as ``{field: value}``."""
        lo = HEADER_WORDS + index * SLOT_WORDS
        row = self._words[lo : lo + SLOT_WORDS]
        copy = row.tolist()
        for _ in range(retries):
            copy = row.tolist()
            if copy[SEQ] % 2 == 0 and row[SEQ] == copy[SEQ]:
                break
        return dict(zip(SLOT_FIELDS, copy))

    def slots(self) -> list[dict[str, int]]:
        """Every claimed slot, with its index."""
        out = []
        for i in range(self.n_slots):
            s = self.slot(i)
            if s["role"]:
                out.append({"slot": i, **s})
        return out
