"""Run directories under the run root: where they live, which are streamtok's, which to prune.

A run root may be shared (``~/.cache`` over NFS by several nodes, a container's view of the
host's ``/run``) and may hold anything: a tokenize output, a user's files. So every
``manifest.json`` is checked before use and anything that is not a streamtok run is skipped,
never deleted. A run records the host, boot id and PID namespace of its trainer: whether its
PID is alive can only be judged (and the run pruned) from that same host, boot and
namespace; elsewhere it is someone else's run, left alone. Imports neither torch nor numpy
(the monitor uses it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from dataclasses import dataclass
from typing import Any

from .._files import read_regular
from ..errors import StreamtokError

MANIFEST, STATS = "manifest.json", "stats.bin"
LAYOUT_VERSION = 1
MANIFEST_MAX_BYTES = 64 << 20  # a manifest lists its shards: ~200 bytes each, so 300k shards fit
LATEST_TIME = 32503680000.0  # 3000-01-01 UTC: a later "created" is not a time (datetime cannot show 1e300)


class RunDirError(StreamtokError, ValueError):
    """A run directory, its manifest or its stats file is not what a streamtok loader writes."""


def run_root() -> str:
    """Where runs are published: ``$STREAMTOK_RUN_DIR``, else a per-user runtime or cache dir."""
    if os.environ.get("STREAMTOK_RUN_DIR"):
        return os.environ["STREAMTOK_RUN_DIR"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "streamtok")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "streamtok", "runs")


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def identity() -> dict[str, Any]:
    """Where this process's PIDs mean something: host name, boot id, PID namespace."""
    return {
        "host": socket.gethostname(),
        "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
        "pid_ns": _pid_namespace(),
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _is_time(v: Any) -> bool:
    return _is_number(v) and 0 <= v < LATEST_TIME


# The keys every run manifest has, with what each must be (checked before any use).
_RUN_KEYS: dict[str, tuple[str, Any]] = {
    "layout_version": ("the integer 1", lambda v: v == LAYOUT_VERSION and _is_int(v)),
    "pid": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "created": ("a time (seconds since the epoch, before the year 3000)", _is_time),
}
# The keys the monitor reads to show and replay a run.
_SHOW_KEYS: dict[str, tuple[str, Any]] = {
    "mode": ("one of shuffle, random, sequential, block_shuffle",
             lambda v: v in ("shuffle", "random", "sequential", "block_shuffle")),
    "seq_len": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "batch_size": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "seed": ("an integer", _is_int),
    "epochs": ("a positive integer or null", lambda v: v is None or (_is_int(v) and v > 0)),
    "rank": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "world_size": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "steps_per_epoch": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "step_samples": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "num_workers": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "token_bytes": ("1, 2, 4 or 8", lambda v: _is_int(v) and v in (1, 2, 4, 8)),
    "shards": ("a list of {path, n_tokens, offset, size}", lambda v: isinstance(v, list) and all(_shard_ok(s) for s in v)),
}


def _mixture_problem(m: Any) -> str | None:
    """What makes a manifest's ``mixture`` entry unusable (``None``: fine)."""
    if not isinstance(m, dict) or not isinstance(m.get("sources"), list) or not m["sources"]:
        return "not an object with a non-empty 'sources' list"
    names = []
    for s in m["sources"]:
        if not (isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"]
                and _is_int(s.get("windows_per_epoch")) and s["windows_per_epoch"] > 0):
            return f"source {s!r} is not {{name: a non-empty string, windows_per_epoch: a positive integer}}"
        cap = s.get("max_epochs")
        if cap is not None and not (isinstance(cap, (int, float)) and not isinstance(cap, bool) and math.isfinite(cap) and cap > 0):
            return f"source {s['name']!r} has max_epochs {cap!r}, not a number of epochs > 0"
        names.append(s["name"])
    if len(set(names)) != len(names):
        return f"source names {names} repeat"
    if m.get("primary") is not None and m["primary"] not in names:
        return f"primary {m['primary']!r} is not one of the sources {names}"
    return None


def _shard_ok(s: Any) -> bool:
    return (
        isinstance(s, dict) and isinstance(s.get("path"), str)
        and all(_is_int(s.get(k)) and s[k] >= 0 for k in ("n_tokens", "offset", "size"))
    )


def manifest_problem(m: Any, *, full: bool = False) -> str | None:
    """What makes ``m`` not a streamtok run manifest (``None``: it is one).

    Args:
        m: the parsed ``manifest.json``.
        full: also check the keys the monitor shows (a loader's configuration).
    """
    if not isinstance(m, dict):
        return f"a JSON {type(m).__name__}, not an object"
    keys = {**_RUN_KEYS, **_SHOW_KEYS} if full else _RUN_KEYS
    for key, (what, ok) in keys.items():
        if key not in m:
            return f"no {key!r}"
        if not ok(m[key]):
            return f"{key!r} is {m[key]!r}, not {what}"
    if full and m["rank"] >= m["world_size"]:
        return f"'rank' {m['rank']} is not below 'world_size' {m['world_size']}"
    if full and m.get("mixture") is not None:
        problem = _mixture_problem(m["mixture"])
        if problem:
            return f"'mixture' {problem}"
    start = m.get("pid_start")
    if start is not None and not _is_time(start):
        return f"'pid_start' is {start!r}, not a time (seconds since the epoch) or null"
    return None


def read_manifest(run_dir: str, *, full: bool = False) -> dict[str, Any]:
    """The manifest of ``run_dir``, checked (see :func:`manifest_problem`).

    Args:
        run_dir: a run directory.
        full: also check the keys the monitor shows.

    Raises:
        RunDirError: unreadable, not a regular file of at most ``MANIFEST_MAX_BYTES`` (a FIFO,
            a device, a symlink), not JSON, or not a streamtok run manifest.
    """
    path = os.path.join(run_dir, MANIFEST)
    try:  # a FIFO, a device or a link to one would block or never end: regular files only
        m = json.loads(read_regular(path, MANIFEST_MAX_BYTES))
    except (OSError, ValueError, RecursionError) as e:
        raise RunDirError(f"{path}: cannot read a run manifest: {e}") from e
    problem = manifest_problem(m, full=full)
    if problem:
        raise RunDirError(f"{path}: not a streamtok run manifest: {problem}")
    return m


def pid_alive(pid: int, pid_start: float | None = None) -> bool:
    """Whether ``pid`` runs here and is the same process (start time within 1 s) as recorded.

    Args:
        pid: a process id of this PID namespace.
        pid_start: its recorded start time (seconds since the epoch), or ``None``.
    """
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


@dataclass(frozen=True)
class RunInfo:
    """A run directory found under the run root.

    ``local``: made on this host, boot and PID namespace, so ``alive`` was judged from its
    PID; a run of another host or namespace is never called alive here, nor pruned.
    """

    dir: str
    pid: int
    created: float
    alive: bool
    local: bool = True


def is_local(m: dict[str, Any], me: dict[str, Any] | None = None) -> bool:
    """Whether the run of manifest ``m`` was made on this host, boot and PID namespace.

    A manifest without these facts (an older streamtok) counts as foreign: never pruned.

    Args:
        m: a checked run manifest.
        me: this process's :func:`identity` (computed if not given).
    """
    me = me or identity()
    return m.get("host") == me["host"] and all(m.get(k) == me[k] for k in ("boot_id", "pid_ns"))


def list_runs(root: str | None = None) -> list[RunInfo]:
    """Every streamtok run under ``root``, newest first; anything else there is skipped.

    Args:
        root: the run root; default :func:`run_root`.

    Raises:
        RunDirError: ``root`` exists but is not a directory, or cannot be listed.
    """
    root = root or run_root()
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    except OSError as e:  # a file, or no permission: say so rather than show no runs
        raise RunDirError(f"run root {root}: {e.strerror or e}") from e
    me, runs = identity(), []
    for name in names:
        d = os.path.join(root, name)
        try:
            m = read_manifest(d)
        except RunDirError:
            continue
        local = is_local(m, me)
        alive = local and pid_alive(m["pid"], m.get("pid_start"))
        runs.append(RunInfo(d, m["pid"], float(m["created"]), alive, local))
    return sorted(runs, key=lambda r: r.created, reverse=True)


KEEP_ENDED = 10  # ended runs of this host and user kept per run root; older ones are pruned


def prune_runs(root: str, keep: int = KEEP_ENDED) -> None:
    """Delete this host's and this user's ended runs beyond the ``keep`` newest.

    Never a live run, another host's or namespace's run, or a directory another user
    owns (a run root may be shared); anything that is not a run is not even looked at.

    Args:
        root: the run root.
        keep: ended runs to keep, newest first.
    """
    try:
        ended = [r for r in list_runs(root) if r.local and not r.alive]
    except RunDirError:
        return
    uid = os.getuid() if hasattr(os, "getuid") else None
    for r in ended[keep:]:
        try:
            st = os.lstat(r.dir)
        except OSError:
            continue
        if uid is not None and st.st_uid != uid:
            continue
        shutil.rmtree(r.dir, ignore_errors=True)
