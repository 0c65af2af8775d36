"""One shard file open for reading: its stamp, its descriptor and its memory map, and checked reads.

A shard can change under a running reader: ``cp new.bin shard.bin`` truncates the file and
writes it again in place (same inode, same size at the end), ``rsync`` or a writer replaces it
by rename. Two things must never follow: bytes of the new file in a batch, and a SIGBUS (a
mapped page read past the end of a truncated file kills the process).

- The **stamp** of a file is ``(inode, device, size, mtime_ns, ctime_ns)``, taken when the
  reader is built. Any write, truncation or ``utime`` moves the ctime, which no tool can set
  back (``touch -d``/``rsync -t`` set the mtime only), and a rename gives another inode. A file
  opened later (a worker, a new pass, an evicted map) must have the same stamp.
- Tokens are **read with** ``pread``, not copied out of the map: a truncated file gives a short
  read, never a fault. After a batch's reads, each file it touched is ``fstat``-ed again and its
  stamp compared: the kernel moves the ctime before a write's bytes become visible, so bytes of
  a rewrite that reached the batch are always seen by that check, and the batch is refused.

Cost: one ``pread`` per window (instead of one slice copy) and one ``fstat`` per shard per
batch; ``benchmarks/bench_checks.py`` measures both against the unchecked memory-map copy.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from ._formats import ShardInfo
from .errors import ShardFormatError, ShardNotFoundError

Stamp = tuple[int, int, int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    """A file's identity and version: inode, device, size, mtime and ctime (ns)."""
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def take_stamp(info: ShardInfo) -> Stamp:
    """The stamp of a probed shard, checking that its size is still what the probe saw.

    Raises:
        ShardNotFoundError: the file is gone; ShardFormatError: its size changed.
    """
    try:
        st = os.stat(info.path)
    except FileNotFoundError:
        raise ShardNotFoundError(f"{info.path}: the shard was deleted while the reader was opening it") from None
    if st.st_size != info.offset + info.nbytes:
        raise ShardFormatError(f"{info.path}: the file changed while the reader was opening it ({st.st_size} bytes)")
    return stamp_of(st)


def describe_change(path: str, old: Stamp, new: Stamp, when: str = "while the loader was reading it") -> str:
    """Why ``new`` is not ``old``, for an error message naming ``path``."""
    if new[:2] != old[:2]:
        what = "was replaced by another file (a new inode: renamed over, or deleted and re-created)"
    elif new[2] != old[2]:
        what = f"was truncated or rewritten in place ({new[2]} bytes, expected {old[2]})"
    else:
        what = "was rewritten in place (same size, new modification/change time)"
    return (
        f"{path}: the file changed {when}: it {what}. No byte of the new "
        "file was handed out; rebuild the loader (and its state) on the new data"
    )


class ShardFile:
    """An open shard: the file (kept open for ``pread``), its read-only map and token array.

    Args:
        info: the probed shard.
        stamp: its stamp when the reader was built; the file opened now must match it.
        advice: an ``madvise`` flag for the map, or ``None``.

    Raises:
        ShardNotFoundError: the file is gone; ShardFormatError: it is another file or changed.
    """

    __slots__ = ("info", "stamp", "file", "fd", "mm", "arr", "addr")

    def __init__(self, info: ShardInfo, stamp: Stamp, advice: int | None = None):
        self.info, self.stamp = info, stamp
        try:
            self.file = open(info.path, "rb", buffering=0)
        except FileNotFoundError:
            raise ShardNotFoundError(
                f"{info.path}: the shard was deleted after the loader was built; restore it, or rebuild the loader"
            ) from None
        self.fd = self.file.fileno()
        now = stamp_of(os.fstat(self.fd))
        if now != stamp:
            self.file.close()
            raise ShardFormatError(describe_change(info.path, stamp, now, "since the reader opened it"))
        self.mm = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        if advice is not None:
            self.mm.madvise(advice)
        self.arr = np.frombuffer(self.mm, dtype=info.dtype, count=info.n_tokens, offset=info.offset)
        self.addr: int = self.arr.ctypes.data  # token 0's address in this process (streamtok._vmread)

    def __del__(self) -> None:
        file = getattr(self, "file", None)  # evicted from the reader's LRU, or the reader is gone
        if file is not None:
            file.close()

    def check(self) -> None:
        """Raise :class:`ShardFormatError` when the open file's stamp is not the reader's (one ``fstat``)."""
        now = stamp_of(os.fstat(self.fd))
        if now != self.stamp:
            raise ShardFormatError(describe_change(self.info.path, self.stamp, now))

    def read_into(self, lo: int, dest: np.ndarray) -> None:
        """Tokens ``[lo, lo + len(dest))`` of this shard into the 1-D array ``dest`` (``pread``).

        ``dest`` may have another integer dtype (the copy converts). A short read (the file was
        truncated) raises :class:`ShardFormatError`; a rewrite is caught by :meth:`check` after.
        """
        info = self.info
        nbytes = len(dest) * info.dtype.itemsize
        offset = info.offset + lo * info.dtype.itemsize
        if dest.dtype == info.dtype and dest.flags.c_contiguous:
            view = memoryview(dest).cast("B")
            got = os.preadv(self.fd, [view], offset)
            while 0 < got < nbytes:  # regular files read whole; loop in case one does not
                more = os.preadv(self.fd, [view[got:]], offset + got)
                got = got + more if more else got
                if not more:
                    break
        else:
            data = os.pread(self.fd, nbytes, offset)
            got = len(data)
            if got == nbytes:
                dest[:] = np.frombuffer(data, dtype=info.dtype)
        if got != nbytes:
            now = stamp_of(os.fstat(self.fd))
            raise ShardFormatError(describe_change(info.path, self.stamp, now))
