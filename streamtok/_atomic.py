"""Atomic file writes: a temporary name beside the target, then ``os.replace``.

A reader (or a later run) sees the old file or the new one, never a part of one: a crash
leaves at most a hidden ``.NAME.*.tmp`` file that nothing trusts. ``fsync`` before the rename
makes the new contents survive a power loss too (a few ms; skip it for files that only live
as long as the process, like the metrics manifest).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success it replaces ``path``, on error it is removed.

    Args:
        path: the final file name (its directory must exist).
        mode: ``"wb"`` or ``"w"``.
        fsync: flush the data to disk before the rename.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a dataset is usually shared
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:  # the rename itself must reach the disk too
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any, *, fsync: bool = True) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_write(path, "w", fsync=fsync) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
