"""The on-disk side of the block cache: names, locks, the byte limit and eviction.

Layout under ``cache_dir``::

    lock                      one flock: held while the byte count is read and changed
    locks/NNN.lock            1024 flock buckets: a block is downloaded under its bucket's lock
    blocks/D.B.I.N            a complete block: object digest D, block size B, index I, N bytes
    blocks/D.B.I.N.part       a reservation: N bytes being downloaded, counted against the limit
    plans/PID                 the blocks process PID needs next, in order of need, one per line

The digest covers the object's URL, ETag and size, so a changed object never matches an old
block: its blocks are simply never read again and are evicted first. Every process of a node
that opens the same directory shares the blocks, the limit and the locks.

The limit holds at every instant: space is reserved (the ``.part`` file created) under the
directory lock before a byte is written, and the count includes the reservations of every
process. A reservation left by a process that died is found stale (its bucket lock can be
taken) and removed. Eviction ranks blocks by when the node next needs them: each process
publishes the blocks its own plan needs next (``plans/PID``, rewritten atomically every few
steps), and a block's rank is the earliest among the live processes' lists, so one rank's
worker does not evict what another needs soon. Counting is a scan of ``blocks/`` under the lock: ~1 ms for 2000 blocks,
paid once per block downloaded (MiB to tens of MiB), not per read.
"""

from __future__ import annotations

import errno
import fcntl
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BUCKETS = 1024
_PART = ".part"


@dataclass(frozen=True)
class BlockName:
    """A block's file name: which object version, which block size and index, how many bytes."""

    digest: str
    block_bytes: int
    index: int
    nbytes: int

    def __str__(self) -> str:
        return f"{self.digest}.{self.block_bytes}.{self.index}.{self.nbytes}"

    @classmethod
    def parse(cls, name: str) -> BlockName | None:
        """The name's fields, or None for a file that is not a block (never trusted, never counted)."""
        parts = name.split(".")
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))


@dataclass(frozen=True)
class Entry:
    """One file found by a scan: a complete block or a live reservation."""

    name: str
    nbytes: int
    partial: bool
    mtime: float


class CacheDir:
    """A directory of blocks shared by the processes of one node, bounded by ``limit_bytes``.

    Args:
        path: the directory (created if missing).
        limit_bytes: the most bytes its blocks and reservations may hold together.
    """

    def __init__(self, path: str | os.PathLike, limit_bytes: int):
        self.path = os.fspath(path)
        self.limit_bytes = int(limit_bytes)
        self.blocks = os.path.join(self.path, "blocks")
        self._locks = os.path.join(self.path, "locks")
        os.makedirs(self.blocks, exist_ok=True)
        os.makedirs(self._locks, exist_ok=True)
        self._lock_path = os.path.join(self.path, "lock")
        self.last_usage = 0  # bytes held when last counted (for metrics; counted under the lock)
        self._plans = os.path.join(self.path, "plans")
        os.makedirs(self._plans, exist_ok=True)

    def write_plan(self, names: list[str]) -> None:
        """Publish the blocks this process needs next, soonest first."""
        path = os.path.join(self._plans, str(os.getpid()))
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(names))
        os.replace(tmp, path)

    def read_plans(self) -> dict[str, int]:
        """Block name -> its earliest rank in the lists of the other live processes."""
        ranks: dict[str, int] = {}
        me = os.getpid()
        for entry in os.scandir(self._plans):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            if not _alive(int(entry.name)):
                _unlink(entry.path)
                continue
            try:
                with open(entry.path) as f:
                    names = f.read().split()
            except (FileNotFoundError, UnicodeDecodeError):
                continue
            for i, name in enumerate(names):
                if i < ranks.get(name, i + 1):
                    ranks[name] = i
        return ranks

    def block_path(self, name: BlockName) -> str:
        return os.path.join(self.blocks, str(name))

    def _bucket(self, name: str) -> str:
        return os.path.join(self._locks, f"{zlib.crc32(name.encode()) % BUCKETS:04d}.lock")

    @contextmanager
    def _flock(self, path: str, blocking: bool = True) -> Iterator[bool]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases its flock

    @contextmanager
    def block_lock(self, name: BlockName) -> Iterator[None]:
        """Hold ``name``'s download lock: one process (and one thread) of the node at a time."""
        with self._flock(self._bucket(str(name))):
            yield

    def scan(self) -> list[Entry]:
        """Every block and live reservation; stale reservations (owner gone) are removed."""
        entries = []
        with os.scandir(self.blocks) as it:
            for e in it:
                partial = e.name.endswith(_PART)
                base = e.name[: -len(_PART)] if partial else e.name
                parsed = BlockName.parse(base)
                if parsed is None:
                    continue
                if partial:
                    with self._flock(self._bucket(base), blocking=False) as got:
                        if got:  # nobody holds its bucket: the downloader died
                            _unlink(e.path)
                            continue
                try:
                    mtime = e.stat().st_mtime
                except FileNotFoundError:
                    continue
                entries.append(Entry(base, parsed.nbytes, partial, mtime))
        return entries

    def usage(self) -> int:
        """Bytes held now by blocks and reservations."""
        with self._flock(self._lock_path):
            self.last_usage = sum(e.nbytes for e in self.scan())
            return self.last_usage

    def reserve(self, name: BlockName, next_use: Callable[[str], float], use: float) -> bool:
        """Reserve ``name.nbytes`` (creating its ``.part``), evicting blocks next used after ``use``.

        Blocks are evicted furthest next use first (Belady's rule; a block with no known use
        counts as infinitely far). A block next used at or before ``use`` is never evicted for
        this one, so a prefetch cannot push out what is needed sooner. Returns False, having
        evicted nothing, when the space cannot be found that way. The caller holds the
        block's lock.
        """
        if name.nbytes > self.limit_bytes:
            return False
        with self._flock(self._lock_path):
            entries = self.scan()
            used = sum(e.nbytes for e in entries)
            victims: list[Entry] = []
            if used + name.nbytes > self.limit_bytes:
                ranked = sorted(
                    ((next_use(e.name), -e.mtime, e) for e in entries if not e.partial and e.name != str(name)),
                    key=lambda t: (t[0], t[1]),
                    reverse=True,
                )
                for far, _, e in ranked:
                    if used + name.nbytes <= self.limit_bytes or far <= use:
                        break
                    victims.append(e)
                    used -= e.nbytes
                if used + name.nbytes > self.limit_bytes:
                    self.last_usage = sum(e.nbytes for e in entries)
                    return False
            self.last_usage = used + name.nbytes
            for e in victims:
                _unlink(os.path.join(self.blocks, e.name))
            fd = os.open(self.block_path(name) + _PART, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.close(fd)
            return True

    def write(self, name: BlockName, data: bytes | memoryview) -> None:
        """Write a reserved block and publish it by rename; on any error the reservation is freed.

        The write runs outside the directory lock (it is the long part); the rename inside it.
        """
        part = self.block_path(name) + _PART
        try:
            with open(part, "r+b") as f:
                f.write(data)
            # Renamed under the directory lock: a scan running meanwhile could otherwise list
            # neither name (readdir over a rename) and undercount, letting a reservation overfill.
            with self._flock(self._lock_path):
                os.replace(part, self.block_path(name))
        except BaseException:
            _unlink(part)
            raise

    def release(self, name: BlockName) -> None:
        """Drop a reservation that will not be written."""
        _unlink(self.block_path(name) + _PART)


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full disk or quota raises."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
