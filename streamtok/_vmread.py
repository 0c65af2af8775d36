"""Copy many spans out of this process's own memory maps in one system call, without SIGBUS.

A plain copy out of a shard's map is fast but kills the process with SIGBUS when the file was
truncated under it; one ``pread`` per window is safe but pays a system call per window
(~1.5 µs on a VM, most of a batch's cost). Linux's ``process_vm_readv`` on our own pid copies a
whole batch's spans in one call, and a page past a truncated file's end makes it stop short
(or fail with ``EFAULT``) instead of raising a signal. The caller then reads the rest with
``pread``, which names the truncated file. Where the call is missing or refused (not Linux, a
seccomp filter, a sandbox), :func:`copy_spans` says so once and the caller keeps ``pread``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

import numpy as np

IOV_MAX = 1024  # iovecs per call (Linux's UIO_MAXIOV)

_call = None
_usable = sys.platform.startswith("linux")


def _bind() -> None:
    global _call, _usable
    try:
        fn = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):  # no such symbol in this libc
        _usable = False
        return
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    _call = fn


def usable() -> bool:
    """Whether :func:`copy_spans` can copy here (``False`` after the kernel refused it once)."""
    return _usable


def copy_spans(dest: np.ndarray, src: np.ndarray, nbytes: np.ndarray) -> int:
    """Copy ``nbytes[i]`` bytes from address ``src[i]`` to ``dest[i]`` for each ``i``, in order.

    The addresses are this process's: ``src`` inside live memory maps, ``dest`` inside a
    writable buffer laid out so that the spans follow each other (the count returned is then
    a position in it). Returns the bytes copied from the start: all of them, fewer where a
    source page could not be read (a truncated file), or ``-1`` when the call is unavailable
    here (nothing copied; :func:`usable` is then ``False`` for good).
    """
    if not _usable:
        return -1
    if _call is None:
        _bind()
        if _call is None:
            return -1
    n = len(nbytes)
    iov = np.empty((2, n, 2), dtype=np.uint64)  # the local iovecs, then the remote ones
    iov[0, :, 0], iov[0, :, 1], iov[1, :, 0], iov[1, :, 1] = dest, nbytes, src, nbytes
    local = iov.ctypes.data
    remote = local + n * 16
    if n <= IOV_MAX:
        got = _call(os.getpid(), local, n, remote, n, 0)
        return got if got >= 0 else _failed(0)
    pid, done = os.getpid(), 0
    for lo in range(0, n, IOV_MAX):
        m = min(n, lo + IOV_MAX) - lo
        got = _call(pid, local + lo * 16, m, remote + lo * 16, m, 0)
        if got < 0:
            return _failed(done)
        done += got
        if got < int(nbytes[lo : lo + m].sum()):
            return done
    return done


def _failed(done: int) -> int:
    """What :func:`copy_spans` returns after the call failed with ``done`` bytes copied."""
    global _usable
    err = ctypes.get_errno()
    if done == 0 and err in (errno.ENOSYS, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ESRCH):
        _usable = False  # refused here for good: the caller keeps pread
        return -1
    return done  # EFAULT: a page past a truncated file's end; the caller reads from there with pread
