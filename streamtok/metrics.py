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
gone. Counters are cumulative; the monitor takes differences for rates.

The pages the reader touched (the denominator of the page-cache hit ratio) are not counted
here: the order of windows is a pure function of the configuration, so the monitor replays
the windows between two published positions and counts their pages itself, exactly, at no
cost to the training process (counting them per batch here measured 1-1.5% of the loader's
throughput at ``num_workers=0``, over the 1% budget).

Off with ``streamtok.loader(..., metrics=False)`` or ``STREAMTOK_METRICS=0``.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._atomic import atomic_write, write_json_atomic

MAGIC = 0x5354_4D45_5452_4943  # "STMETRIC"
LAYOUT_VERSION = 1
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
    "passes",
    "spare0",
    "spare1",
    "spare2",
    "spare3",
)
SLOT_WORDS = len(SLOT_FIELDS)
SEQ, PID, ROLE, WORKER_ID, BATCHES, TOKENS, WAIT_NS, EPOCH, OFFSET, START_NS, ITERATING, PASSES = range(12)
ROLE_TRAINER, ROLE_WORKER, ROLE_CONSUMER = 1, 2, 3
MANIFEST, STATS = "manifest.json", "stats.bin"
_counter = itertools.count()


def enabled(flag: bool | None = None) -> bool:
    """Whether to publish: ``flag`` if given, else ``STREAMTOK_METRICS`` (default on)."""
    if flag is not None:
        return bool(flag)
    return os.environ.get("STREAMTOK_METRICS", "1").strip().lower() not in ("0", "false", "no", "off", "")


def run_root() -> str:
    """Where runs are published: ``$STREAMTOK_RUN_DIR``, else a per-user runtime or cache dir."""
    if os.environ.get("STREAMTOK_RUN_DIR"):
        return os.environ["STREAMTOK_RUN_DIR"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "streamtok")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "streamtok", "runs")


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
        w[EPOCH] = epoch
        w[OFFSET] = offset
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

    def set_iterating(self, on: bool, epoch: int | None = None, offset: int | None = None) -> None:
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        w[ITERATING] = int(on)
        if on:
            self.passes += 1
            w[PASSES] = self.passes
        if epoch is not None:
            w[EPOCH] = epoch
        if offset is not None:
            w[OFFSET] = offset
        w[SEQ] = self.seq = seq + 2


def _remove_run(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # never from a forked worker's copy
        shutil.rmtree(path, ignore_errors=True)


class RunPublisher:
    """The trainer's side of a run directory: manifest plus stats slots, opened per process.

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
        header = np.zeros(HEADER_WORDS + self.n_slots * SLOT_WORDS, dtype=np.int64)
        header[:5] = (MAGIC, LAYOUT_VERSION, self.n_slots, SLOT_WORDS, time.time_ns())
        stats = os.path.join(self.dir, STATS)
        with atomic_write(stats, fsync=False) as f:
            f.write(header.tobytes())
        self.manifest: dict[str, Any] = {
            "layout_version": LAYOUT_VERSION,
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "created": time.time(),
            **config,
        }
        write_json_atomic(os.path.join(self.dir, MANIFEST), self.manifest, fsync=False)
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

    def update_manifest(self, **facts: Any) -> None:
        """Add facts to the manifest (rewritten atomically; call rarely, never per batch)."""
        if all(self.manifest.get(k) == v for k, v in facts.items()):
            return
        self.manifest.update(facts)
        write_json_atomic(os.path.join(self.dir, MANIFEST), self.manifest, fsync=False)

    def meter(self, batches: Iterator[Any], sampler: Any) -> Meter:
        """Wrap the trainer's batch iterator (see :class:`Meter`)."""
        return Meter(batches, self.slot(0, ROLE_TRAINER), sampler)  # type: ignore[arg-type]

    def consumer(self, state: Callable[[], dict[str, Any]]) -> Callable[[Iterator[Any]], Meter] | None:
        """Claim the consumer slot now; return a wrapper metering the loop's batches into it.

        For a prefetcher whose thread iterates the loader (see :class:`Consumed`): call it
        in the training loop's thread, before that thread starts, so that the two threads
        never claim slots at once. ``None`` when the run has no consumer slot.

        Args:
            state: the loader state as of the last batch the loop took (the prefetcher's
                ``state_dict``).
        """
        if self.consumer_index is None:
            return None
        slot = self.slot(self.consumer_index, ROLE_CONSUMER)
        position = Consumed(self.manifest["batch_size"], self.manifest["seq_len"], state)
        return lambda batches: Meter(batches, slot, position)  # type: ignore[arg-type]

    def gatherer(self, gather: Callable[..., Any], worker_id: int | None, collator: Any) -> Callable[..., Any]:
        """``gather`` counting batches into worker ``worker_id``'s slot (as is in the trainer)."""
        if worker_id is None:  # the trainer counts what it delivers (see Meter)
            return gather
        slot = self.slot(1 + worker_id, ROLE_WORKER, worker_id)
        if slot is None:
            return gather
        return counting_gather(gather, slot, tokens=collator.batch_size * collator.source.window_len)

    def slot(self, index: int, role: int, worker_id: int = 0) -> SlotWriter | None:
        """Claim slot ``index`` for this process (``None`` if the run has no such slot)."""
        if not 0 <= index < self.n_slots:
            return None
        if self._pid != os.getpid():  # first use in this process (trainer, or a new worker)
            with open(os.path.join(self.dir, STATS), "r+b") as f:
                self._map = mmap.mmap(f.fileno(), 0)
            self._pid, self._writers = os.getpid(), {}
        writer = self._writers.get(index)
        if writer is None:
            start = (HEADER_WORDS + index * SLOT_WORDS) * 8
            writer = SlotWriter(memoryview(self._map)[start : start + SLOT_WORDS * 8].cast("q"))  # type: ignore[index]
            writer.claim(role, worker_id)
            self._writers[index] = writer
        return writer


class Meter:
    """The trainer's side: iterates the loader's batches, timing the training loop's wait.

    A batch's wait runs from the moment the loop asks for it until the loader's source
    returns it (with workers, the queue wait; without, the gather itself; the split into
    ``(x, y)`` after it, ~10 µs for 32x1024 tokens on CPU, is not counted). Clock reads are
    what cost here (in a VM, cold after each batch's 64 KiB of copying), so only every
    ``k``-th batch is timed and stands for ``k`` batches; ``k`` adapts so that timed batches
    come about every 1-4 ms: every batch when the loop is slow (a real model), 1 in 16-64
    when the loader runs flat out. Totals are stored into the slot at most every
    ``PUBLISH_NS`` (5 ms) and at the end of the pass, at a point where the loader has
    advanced its position past the last batch counted, so position and count always match.
    Per untimed batch: one generator step, a test and an add. The same class meters a
    background prefetcher's iterator for the training loop (see :class:`Consumed`).
    """

    PUBLISH_NS = 5_000_000
    MAX_STRIDE = 64

    def __init__(self, batches: Iterator[Any], slot: SlotWriter, sampler: Any):
        self.batches, self.slot, self.sampler = batches, slot, sampler

    def __iter__(self) -> Iterator[Any]:
        clock, slot, s = time.perf_counter_ns, self.slot, self.sampler
        tokens = s.batch_size * s.seq_len
        # Totals continue from earlier passes in this process (the slot is claimed once).
        n, wait, tokens0, n0 = slot.batches, slot.wait_ns, slot.tokens, slot.batches
        slot.set_iterating(True, s.epoch, s.offset)
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
                    if t1 >= due:
                        due = t1 + self.PUBLISH_NS
                        slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset)
                n += 1
                yield buf
                if n - timed_at >= stride:
                    timed_at, t0 = n, clock()
        finally:  # end of the pass, or left early (break, exception, close)
            slot.publish(n, tokens0 + (n - n0) * tokens, wait, s.epoch, s.offset)
            slot.set_iterating(False)


class Consumed:
    """The position a consumer :class:`Meter` publishes: that of the training loop.

    ``CUDAPrefetcher(background=True)`` iterates the loader on its own thread, so the
    loader's :class:`Meter` (slot 0) times that thread's wait for the DataLoader, and its
    count and position run ahead of the loop by the batches in flight. A second Meter,
    around the prefetcher's iterator in the training loop's thread, writes the consumer
    slot: the loop's wait inside ``next()``, the batches it took, and their position, from
    ``state()`` (the prefetcher's state as of the last batch handed out; a store between two
    batches is one batch ahead of its count, the one at the end of a pass matches it). It
    samples as the loader's Meter does, so it costs the loop the same per batch (a generator
    step, a test and an add), small next to the queue get it times; the position is read
    only when the totals are stored (at most every 5 ms).

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

    A run directory that cannot be created (read-only home, full disk) turns metrics off
    with a warning; training never fails for the dashboard's sake.
    """
    if not enabled(flag):
        return None
    sampler, reader = collator.source, collator.reader
    config = {
        "mode": sampler.mode,
        "seq_len": sampler.seq_len,
        "batch_size": sampler.batch_size,
        "seed": sampler.seed,
        "epochs": sampler.epochs,
        "rank": sampler.rank,
        "world_size": sampler.world_size,
        "steps_per_epoch": sampler.steps_per_epoch,
        "step_samples": sampler.step_samples,
        "num_workers": num_workers,
        "n_tokens": reader.n_tokens,
        "token_bytes": int(np.dtype(reader.dtype).itemsize),
        "raw_dtype": str(reader.raw_dtype),
        "shards": [
            {"path": os.path.abspath(i.path), "n_tokens": int(i.n_tokens), "offset": int(i.offset),
             "size": os.path.getsize(i.path)}
            for i in reader.infos
        ],
        **facts,
    }
    try:
        return RunPublisher(config, n_slots=1 + num_workers, consumer=True)
    except OSError as e:
        import warnings

        warnings.warn(f"streamtok metrics are off: cannot publish under {run_root()}: {e}", stacklevel=3)
        return None


def counting_gather(gather: Callable[..., Any], slot: SlotWriter, *, tokens: int) -> Callable[..., Any]:
    """Wrap a worker's ``collator.gather`` so that its slot counts the batches it builds."""

    def counted(starts: np.ndarray, shared: bool = False, **kw: Any) -> Any:
        buf = gather(starts, shared=shared, **kw) if kw else gather(starts, shared=shared)
        slot.gathered(tokens)
        return buf

    return counted


# -- reading side (the monitor) -------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """A run directory found on this machine."""

    dir: str
    pid: int
    created: float
    alive: bool


def pid_alive(pid: int, pid_start: float | None = None) -> bool:
    """Whether ``pid`` runs and is the same process (start time within 1 s) as recorded."""
    if pid <= 0:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return pid_start is None or abs(p.create_time() - pid_start) < 1.0
    except Exception:  # NoSuchProcess, AccessDenied: treat as not ours
        return False


def read_manifest(run_dir: str) -> dict[str, Any]:
    with open(os.path.join(run_dir, MANIFEST)) as f:
        return json.load(f)


def list_runs(root: str | None = None) -> list[RunInfo]:
    """All runs under ``root``, newest first, with whether their trainer is still alive."""
    root = root or run_root()
    runs = []
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    for name in names:
        d = os.path.join(root, name)
        try:
            m = read_manifest(d)
        except (OSError, ValueError):
            continue
        runs.append(RunInfo(d, int(m["pid"]), float(m["created"]), pid_alive(int(m["pid"]), m.get("pid_start"))))
    return sorted(runs, key=lambda r: r.created, reverse=True)


def prune_runs(root: str, keep: int = 32) -> None:
    """Delete directories of ended runs beyond the ``keep`` newest ones."""
    ended = [r for r in list_runs(root) if not r.alive]
    for r in ended[keep:]:
        shutil.rmtree(r.dir, ignore_errors=True)


class StatsReader:
    """Consistent copies of a run's slots (a torn copy is retried; a writer killed mid-update
    leaves an odd ``seq``, and its last values are returned after a few retries)."""

    def __init__(self, run_dir: str):
        with open(os.path.join(run_dir, STATS), "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        words = np.frombuffer(self._map, dtype=np.int64)
        if int(words[0]) != MAGIC or int(words[1]) != LAYOUT_VERSION:
            raise ValueError(f"{run_dir}/{STATS}: not a streamtok stats file of layout {LAYOUT_VERSION}")
        self.n_slots, slot_words = int(words[2]), int(words[3])
        self._slots = words[HEADER_WORDS:].reshape(self.n_slots, slot_words)

    def slot(self, index: int, retries: int = 1000) -> dict[str, int]:
        row = self._slots[index]
        copy = row.copy()
        for _ in range(retries):
            seq = int(row[SEQ])
            copy = row.copy()
            if seq % 2 == 0 and int(row[SEQ]) == seq:
                break
        return {name: int(copy[i]) for i, name in enumerate(SLOT_FIELDS)}

    def slots(self) -> list[dict[str, int]]:
        """Every claimed slot, with its index."""
        out = []
        for i in range(self.n_slots):
            s = self.slot(i)
            if s["role"]:
                out.append({"slot": i, **s})
        return out
