"""What the OS can tell about a process and a file: pure functions over /proc and syscalls.

Costs (this machine): one ``smaps_rollup`` read ~0.1-1 ms (the kernel walks the mappings);
``/proc/PID/io`` and ``/proc/PID/stat`` ~20 µs; ``cachestat`` (Linux 6.5+, syscall 451)
~0.1 ms for a cached 400 MB file; ``mincore`` over a mapping of the file, the fallback,
about 50x that. Missing processes raise ``ProcessLookupError``; callers skip them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import platform
from dataclasses import dataclass
from typing import Any

PAGE = mmap.PAGESIZE
_CACHESTAT_NR = 451  # the same number on every architecture (the unified syscall table)
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.syscall.restype = ctypes.c_long


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError as e:
        raise ProcessLookupError(path) from e


def _kv_kib(text: str) -> dict[str, int]:
    """``Key:   123 kB`` lines as ``{key: bytes}``; other lines ignored."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out


def _pick_kib(text: str, keys: tuple[str, ...]) -> dict[str, int]:
    """The ``Key:   123 kB`` lines of ``keys`` only, as ``{key: bytes}`` (absent keys left out):
    a find per key instead of parsing every line (a sample reads these files each second)."""
    out = {}
    for key in keys:
        i = text.find(f"\n{key}:")
        if i < 0:
            continue
        parts = text[i + len(key) + 2 : text.find("\n", i + 1)].split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out


_STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def memory(pid: int, *, rollup: bool = True) -> dict[str, int]:
    """RSS split (anon / file-backed / shmem), PSS and USS of ``pid``, in bytes.

    File-backed RSS is mapped page cache (the shards): the kernel can drop it under pressure.
    PSS divides each shared page among its sharers, so PSS sums over forked workers; RSS
    sums count copy-on-write pages once per process. ``rollup=False`` reads only
    ``/proc/PID/status`` (~20 µs); the PSS/USS keys then are absent: ``smaps_rollup`` walks
    every mapping (28 ms for a worker with 1.2 GB of shards mapped), so callers read it
    less often.
    """
    status = _pick_kib(_read(f"/proc/{pid}/status"), _STATUS_KEYS)
    out = {
        "rss": status.get("VmRSS", 0),
        "rss_anon": status.get("RssAnon", 0),
        "rss_file": status.get("RssFile", 0),
        "rss_shmem": status.get("RssShmem", 0),
    }
    if not rollup:
        return out
    try:
        roll = _kv_kib(_read(f"/proc/{pid}/smaps_rollup"))
    except (ProcessLookupError, PermissionError):
        roll = {}
    out["pss"] = roll.get("Pss", 0)
    out["pss_anon"] = roll.get("Pss_Anon", 0)
    out["pss_file"] = roll.get("Pss_File", 0)
    out["uss"] = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)
    return out


def io(pid: int) -> dict[str, int]:
    """``/proc/PID/io``: ``read_bytes`` is what really came from the block device."""
    out = {}
    for line in _read(f"/proc/{pid}/io").splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def faults(pid: int) -> dict[str, Any]:
    """Minor and major page faults of ``pid`` (not of its children), its CPU seconds, those
    of the children it reaped, its start time and its state.

    Not a page-cache hit ratio: readahead turns a cold sequential read into few major faults.
    ``cpu_s`` is user + system time of all its threads (``/proc/PID/stat``, 10 ms ticks).
    """
    stat = _read(f"/proc/{pid}/stat")
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return {
        "minflt": int(fields[7]), "majflt": int(fields[9]), "cpu_s": (int(fields[11]) + int(fields[12])) * _TICK_S,
        # CPU of its children that it has waited for (reaped DataLoader workers): cutime + cstime.
        "children_cpu_s": (int(fields[13]) + int(fields[14])) * _TICK_S,
        "start_s": int(fields[19]) * _TICK_S,  # when it started, in seconds since boot (10 ms ticks)
        "state": fields[0],  # R, S, D, Z (zombie: exited, not yet reaped), ...
    }


def meminfo(keys: tuple[str, ...] | None = None) -> dict[str, int]:
    """System memory from ``/proc/meminfo``, in bytes (MemTotal, MemAvailable, Cached, ...);
    only ``keys`` when given (a find per key: the sampler reads it every second)."""
    text = _read("/proc/meminfo")
    return _kv_kib(text) if keys is None else _pick_kib("\n" + text, keys)


@dataclass(frozen=True)
class Residency:
    """How much of a file is in the page cache.

    ``evicted`` and ``recently_evicted`` (pages evicted, and evicted recently enough that a
    re-read would count as thrashing) come from ``cachestat``; ``None`` with ``mincore``.
    """

    path: str
    size: int
    cached: int
    evicted: int | None
    recently_evicted: int | None
    method: str

    @property
    def fraction(self) -> float:
        return self.cached / self.size if self.size else 0.0


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


_cachestat_works: bool | None = None if platform.system() == "Linux" else False


def cachestat(path: str) -> Residency | None:
    """Residency via the ``cachestat`` syscall; ``None`` where the kernel lacks it."""
    global _cachestat_works
    if _cachestat_works is False:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, cs = _CacheStatRange(0, 0), _CacheStat()  # len 0: to the end of the file
        rc = _libc.syscall(ctypes.c_long(_CACHESTAT_NR), fd, ctypes.byref(rng), ctypes.byref(cs), ctypes.c_uint(0))
        if rc != 0:
            _cachestat_works = False
            return None
        _cachestat_works = True
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return Residency(path, size, min(size, cs.nr_cache * PAGE), cs.nr_evicted, cs.nr_recently_evicted, "cachestat")


def mincore(path: str) -> Residency:
    """Residency via ``mincore`` over a fresh read-only mapping (touches no page)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return Residency(path, 0, 0, None, None, "mincore")
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
    finally:
        os.close(fd)
    try:
        pages = (size + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        if _libc.mincore(addr, size, vec) != 0:
            raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
        import numpy as np  # here only: --pid and --list start without it (~0.15 s)

        resident = int((np.frombuffer(vec, dtype=np.uint8) & 1).sum())
    finally:
        _libc.munmap(addr, size)
    return Residency(path, size, min(size, resident * PAGE), None, None, "mincore")


def residency(path: str) -> Residency:
    """Page-cache residency of ``path``: ``cachestat`` when the kernel has it, else ``mincore``."""
    return cachestat(path) or mincore(path)


def _children(pid: int) -> list[int] | None:
    """Child PIDs from ``/proc/PID/task/*/children`` (~20 µs per thread); ``None`` if the
    kernel lacks that file (CONFIG_PROC_CHILDREN)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    out: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (DataLoader workers; pin-memory threads are threads).

    Walks ``/proc/PID/task/*/children`` (a few reads) rather than scanning every process on
    the machine (psutil's way, ~8 ms with a few hundred processes), which is the fallback.
    """
    if not os.path.exists(f"/proc/{pid}"):
        return []
    tree, todo = [pid], [pid]
    while todo:
        kids = _children(todo.pop())
        if kids is None:
            return _process_tree_psutil(pid)
        tree.extend(kids)
        todo.extend(kids)
    return tree


def _process_tree_psutil(pid: int) -> list[int]:
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
