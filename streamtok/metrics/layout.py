"""The stats file's layout, its one writer per slot, and a consistent reader.

``stats.bin`` is a header of ``HEADER_WORDS`` int64 words (magic, layout version, slots,
words per slot, creation time, mixture sources ``S``) and one ``SLOT_WORDS`` slot per
writer; a mixture's run then holds one source block per slot (:func:`source_block_words`):
the global step and the windows so far over all ranks, then per source its windows, tokens,
target share and weight (those two float64; NaN: no target yet) and its epoch (exact: a packed
source's too, which the manifest's per-epoch bound cannot give), as of the slot's position.
Header word ``SOURCE_WORDS`` says how many words each source has (0 in files written before
the epoch word: the first four). A writer makes
its slot's ``seq`` word odd, stores (the slot and its source block), and makes it even again
(a seqlock); a reader copies both and retries while ``seq`` was odd or changed under it. A
run of one source has ``S = 0`` and no blocks: the file of earlier streamtok versions.
No torch, no numpy.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
import time
from typing import Any

from .rundir import LAYOUT_VERSION, STATS, RunDirError

MAGIC = 0x5354_4D45_5452_4943  # "STMETRIC"
HEADER_WORDS = 8  # magic, version, n_slots, slot_words, created_ns, n_sources, source_words, 1 spare
N_SOURCES = 5  # the header word holding the mixture's number of sources (0: one source)
SOURCE_WORDS = 6  # the header word holding the words per source (0: an earlier file's 4)
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
    # Remote shards (streamtok.storage), the process's totals; all 0 for local data:
    "net_requests",  # requests sent to the object store
    "net_bytes",  # response bytes received
    "net_retries",  # requests retried after a transient failure
    "net_in_flight",  # requests in flight when last stored
    "net_wait_ns",  # time the gathers spent blocked on the store (bytes not there yet)
    "cache_hits",  # fetch="blocks": block reads served from the node's cache
    "cache_bytes",  # fetch="blocks": bytes in the node's cache when last counted
)
SLOT_WORDS = len(SLOT_FIELDS)
(SEQ, PID, ROLE, WORKER_ID, BATCHES, TOKENS, WAIT_NS, EPOCH, OFFSET, START_NS, ITERATING, PASSES,
 PASS_EPOCH, PASS_OFFSET, ENDED_EPOCH, ENDED_OFFSET, NET_REQUESTS) = range(SLOT_FIELDS.index("net_requests") + 1)
NET_FIELDS = SLOT_FIELDS[NET_REQUESTS:]
ROLE_TRAINER, ROLE_WORKER, ROLE_CONSUMER = 1, 2, 3
SOURCE_FIELDS = ("windows", "tokens", "target", "weight", "epoch")  # per source in a slot's block; target, weight float64
_OLD_SOURCE_WORDS = 4  # a file whose header says 0 words per source: windows, tokens, target, weight
BLOCK_HEAD = 2  # a block's first words: the global step and the windows so far (all ranks)


def source_block_words(n_sources: int, per_source: int = len(SOURCE_FIELDS)) -> int:
    """Words of one slot's source block: global step, windows so far, ``per_source`` words per source."""
    return BLOCK_HEAD + per_source * n_sources if n_sources else 0


def stats_words(n_slots: int, n_sources: int, per_source: int = len(SOURCE_FIELDS)) -> int:
    """Words of a whole stats file of ``n_slots`` slots and ``n_sources`` mixture sources."""
    return HEADER_WORDS + n_slots * (SLOT_WORDS + source_block_words(n_sources, per_source))


# What a mixture publishes at a publish point: the global step, the windows so far (all
# ranks), then per source (windows, tokens, target share or None, weight now, epoch).
SourceRows = tuple[int, int, list[tuple[int, int, float | None, float, int]]]


class SlotWriter:
    """The one writer of one slot, in the process that owns it; every update is a seqlock write.

    Counters live in Python ints and are only stored (never read back) into the map: a
    store into a ``memoryview`` costs ~30 ns, a read-modify-write twice that.
    """

    def __init__(self, words: memoryview, block: memoryview | None = None):
        self.w = words
        # The slot's source block twice: int64 words and the same bytes as float64.
        self.bq = None if block is None else block.cast("q")
        self.bd = None if block is None else block.cast("d")
        self.seq = self.batches = self.tokens = self.wait_ns = self.passes = 0
        self.epoch = self.offset = 0  # the position last stored

    def claim(self, role: int, worker_id: int) -> None:
        """Take the slot for this process. A worker re-spawned into the slot of the same
        worker id (non-persistent workers start anew each pass) continues its counts: the
        slot counts what worker ``worker_id`` gathered, whatever its PID."""
        w = self.w
        self.seq = (w[SEQ] + 1) | 1  # odd while writing, even if a killed writer left it odd
        w[SEQ] = self.seq
        same_worker = role == ROLE_WORKER and w[ROLE] == ROLE_WORKER and w[WORKER_ID] == worker_id
        kept = (w[BATCHES], w[TOKENS]) if same_worker else (0, 0)
        for i in range(1, SLOT_WORDS):  # a new process starts its counters from zero
            w[i] = 0
        self.batches, self.tokens = kept
        w[BATCHES], w[TOKENS] = kept
        for i in range(len(self.bq or ())):
            self.bq[i] = 0  # type: ignore[index]
        w[PID], w[ROLE], w[WORKER_ID], w[START_NS] = os.getpid(), role, worker_id, time.time_ns()
        self.seq += 1
        w[SEQ] = self.seq

    def publish(
        self, batches: int, tokens: int, wait_ns: int, epoch: int, offset: int, sources: SourceRows | None = None,
    ) -> None:
        """Trainer: totals so far (batches and tokens handed out, time waited) and the position;
        a mixture's per-source counts at that position, in the same write."""
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        w[BATCHES] = self.batches = batches
        w[TOKENS] = self.tokens = tokens
        w[WAIT_NS] = self.wait_ns = wait_ns
        w[EPOCH] = self.epoch = epoch
        w[OFFSET] = self.offset = offset
        q, d = self.bq, self.bd
        if sources is not None and q is not None and d is not None:
            step, total, rows = sources
            q[0], q[1] = step, total
            for i, (windows, toks, target, weight, epoch) in enumerate(rows[: (len(q) - BLOCK_HEAD) // len(SOURCE_FIELDS)]):
                j = BLOCK_HEAD + len(SOURCE_FIELDS) * i
                q[j], q[j + 1] = windows, toks
                d[j + 2] = float("nan") if target is None else target
                d[j + 3] = weight
                q[j + 4] = epoch
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

    def network(self, values: tuple[int, ...]) -> None:
        """A process reading remote shards: its :data:`NET_FIELDS` totals, in one write."""
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        for i, v in enumerate(values):
            w[NET_REQUESTS + i] = v
        w[SEQ] = self.seq = seq + 2

    def set_iterating(self, on: bool) -> None:
        """Trainer: inside a pass over the loader (``True``) or between passes."""
        w, seq = self.w, self.seq
        w[SEQ] = seq + 1
        w[ITERATING] = int(on)
        w[SEQ] = self.seq = seq + 2


class StatsReader:
    """Consistent copies of a run's slots (a torn copy is retried; a writer killed mid-update
    leaves an odd ``seq``, and its last values are returned after a few retries).

    Raises:
        RunDirError: the stats file is missing, empty, or not of this layout.
    """

    def __init__(self, run_dir: str):
        path = os.path.join(run_dir, STATS)
        try:
            # O_NONBLOCK: a FIFO put there must not block the open (it is refused below).
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise RunDirError(f"{path}: not a regular file, not a stats file")
                size = st.st_size
                if size < HEADER_WORDS * 8:
                    raise RunDirError(f"{path}: {size} bytes, shorter than a stats header ({HEADER_WORDS * 8})")
                if size % 8:
                    raise RunDirError(f"{path}: {size} bytes, not a whole number of 8-byte words")
                self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
        except OSError as e:
            raise RunDirError(f"{path}: cannot read the run's stats: {e}") from e
        words = memoryview(self._map).cast("q")
        magic, version, n_slots, slot_words, n_sources = words[0], words[1], words[2], words[3], words[N_SOURCES]
        per_source = words[SOURCE_WORDS] or _OLD_SOURCE_WORDS
        if magic != MAGIC or version != LAYOUT_VERSION or slot_words != SLOT_WORDS or per_source not in (
            _OLD_SOURCE_WORDS, len(SOURCE_FIELDS),
        ):
            raise RunDirError(f"{path}: not a streamtok stats file of layout {LAYOUT_VERSION}")
        if n_slots <= 0 or not 0 <= n_sources < 1 << 16 or len(words) != stats_words(n_slots, n_sources, per_source):
            raise RunDirError(
                f"{path}: {len(words) * 8} bytes do not hold the {n_slots} slots and {n_sources} sources its header says"
            )
        self.n_slots, self.n_sources, self.per_source = n_slots, n_sources, per_source
        self._words = words
        self._doubles = memoryview(self._map).cast("d")

    def slot(self, index: int, retries: int = 1000) -> dict[str, Any]:
        """A consistent copy of slot ``index`` as ``{field: value}``.

        In a mixture's run also ``"sources"``: ``{"step", "windows": so far, "rows": [{windows,
        tokens, target, weight, epoch}, ...]}`` in source order (``target`` ``None``: none yet;
        no ``epoch`` in a file written before it was stored).
        """
        lo = HEADER_WORDS + index * SLOT_WORDS
        row = self._words[lo : lo + SLOT_WORDS]
        block_n = source_block_words(self.n_sources, self.per_source)
        b0 = HEADER_WORDS + self.n_slots * SLOT_WORDS + index * block_n
        bq, bd = self._words[b0 : b0 + block_n], self._doubles[b0 : b0 + block_n]
        copy, ints, floats = row.tolist(), [], []
        for _ in range(retries):
            copy = row.tolist()
            ints, floats = bq.tolist(), bd.tolist()
            if copy[SEQ] % 2 == 0 and row[SEQ] == copy[SEQ]:
                break
        out: dict[str, Any] = dict(zip(SLOT_FIELDS, copy))
        if block_n:
            n = self.per_source
            out["sources"] = {
                "step": ints[0],
                "windows": ints[1],
                "rows": [
                    {"windows": ints[j], "tokens": ints[j + 1], "target": None if math.isnan(floats[j + 2]) else floats[j + 2],
                     "weight": floats[j + 3], **({"epoch": ints[j + 4]} if n > _OLD_SOURCE_WORDS else {})}
                    for j in range(BLOCK_HEAD, block_n, n)
                ],
            }
        return out

    def slots(self) -> list[dict[str, Any]]:
        """Every claimed slot, with its index."""
        out = []
        for i in range(self.n_slots):
            s = self.slot(i)
            if s["role"]:
                out.append({"slot": i, **s})
        return out
