"""Is a page of a mapped file in the page cache? ``mincore(2)`` through ctypes.

Used by :meth:`MemmapReader.willneed` to skip its ``madvise`` calls while the data is
cached (each costs ~0.5 µs even then: ~15 µs per batch of 32 random windows). Linux reports
page-cache residency for files the caller owns or may write; for others it reports only
pages mapped in this process, which reads as "not cached" and keeps the hints on — the
safe side. Where ``mincore`` is unavailable, :func:`resident` returns ``None``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

PAGE = mmap.PAGESIZE

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _mincore = _libc.mincore
    _mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
    _mincore.restype = ctypes.c_int
except (OSError, AttributeError):  # not Linux/BSD libc
    _mincore = None

_vec = (ctypes.c_ubyte * 1)()


def resident(address: int) -> bool | None:
    """Whether the page holding virtual ``address`` (inside a mapping) is cached; ``None``: unknown."""
    if _mincore is None:
        return None
    if _mincore(address - address % PAGE, PAGE, _vec) != 0:
        return None
    return bool(_vec[0] & 1)
