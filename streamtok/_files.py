"""Reading a small file that anyone could have put there: never block, never read without bound.

A run root is shared and may hold anything (DESIGN §6): ``open(path).read()`` on a FIFO named
``manifest.json`` waits forever for a writer, and on a symlink to ``/dev/zero`` reads until
memory runs out. :func:`read_regular` opens with ``O_NONBLOCK`` (a FIFO opens at once instead of
waiting) and ``O_NOFOLLOW`` (a symlink in the last component is refused: streamtok writes these
files itself, never as links), checks with ``fstat`` on the open descriptor that it is a
regular file (no race with a rename between check and open), and reads at most ``max_bytes``.
Cost: one ``open``, one ``fstat`` and the reads; nothing for a file streamtok wrote.
"""

from __future__ import annotations

import errno
import os
import stat


def read_regular(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link) of at most ``max_bytes``.

    Args:
        path: the file.
        max_bytes: the most this file can legitimately hold.

    Raises:
        OSError: it cannot be opened, is a symlink (``ELOOP``), is not a regular file (a FIFO, a
            device, a directory), or holds more than ``max_bytes`` (``EFBIG``); the message
            names the path and says which.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{path}: a symbolic link, not a file streamtok wrote; not followed") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) else "a device or socket"
            raise OSError(errno.EINVAL, f"{path}: {kind}, not a regular file; not read")
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"{path}: {st.st_size} bytes, more than the {max_bytes} such a file holds; not read")
        chunks, left = [], max_bytes + 1  # one byte more: a file that grew past the cap is refused too
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise OSError(errno.EFBIG, f"{path}: grew past {max_bytes} bytes while read; not read")
        return b"".join(chunks)
    finally:
        os.close(fd)
