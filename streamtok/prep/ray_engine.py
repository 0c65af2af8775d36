"""``--engine ray``: encode the work units as Ray tasks; this process stays the one shard writer.

Data movement: a task gets a :class:`~.units.Unit` (a few numbers) and reads its byte range
itself from the input path, which every node must see (a shared filesystem, or the Hub cache
on one); it returns the unit's token array through Ray's object store, and the driver copies
it into shards in unit order. Per token that is ~4.5 bytes of text read by a task (GPT-2 on
English), 2 bytes (uint16; 4 for uint32) moved task -> driver, and 2 bytes written -- the text
never passes through the driver, and no per-task files need a merge step. Returning arrays
rather than writing per-task files keeps the output in one place and lets a killed task be
retried by Ray (``max_retries``) with nothing to clean up: a unit's tokens depend on the unit
alone, so a retry anywhere returns the same array.

At most ``2 * cluster CPUs + 2`` units are in flight (~32 MiB of text each), so the driver's
memory stays bounded whatever the corpus size. A killed driver loses only the units in
flight: rerun the command and it resumes from the manifest's checkpoint, as the local engine.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import ConfigError, StreamtokError
from ._encode import EncodeJob
from .units import Piece, Unit, run_unit

MAX_RETRIES = 3
CONNECT_TIMEOUT_S = 5.0


class RayEncoder:
    """Encodes units as Ray tasks, yielding their pieces in unit order.

    Args:
        job: the encoding settings and inputs.
        address: the cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
            default: the cluster this process is connected to, else a new local one.
        num_cpus: CPUs of a new local cluster (ignored when joining one).
    """

    def __init__(self, job: EncodeJob, *, address: str | None = None, num_cpus: int | None = None):
        self.job = absolute_paths(job)
        self.address = address
        self.num_cpus = num_cpus
        self._started = False
        self._ray: Any = None

    def __enter__(self) -> RayEncoder:
        try:
            import ray
        except ImportError:
            raise ConfigError("--engine ray needs the ray package; pip install 'streamtok[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            _check_reachable(self.address)
            kw: dict[str, Any] = {"address": self.address, "log_to_driver": False, "include_dashboard": False}
            if self.address is None and self.num_cpus:
                kw["num_cpus"] = self.num_cpus
            try:
                ray.init(**kw)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"--address {self.address}: cannot join the Ray cluster ({str(exc)[:200]})") from None
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._ray.shutdown()

    def map(self, units: Iterable[Unit]) -> Iterator[Piece]:
        """Each unit's piece, in the order given.

        Args:
            units: the units to encode.
        """
        ray = self._ray
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_unit)
        job_ref = ray.put(self.job)
        ahead = 2 * max(int(ray.cluster_resources().get("CPU", 1)), 1) + 2
        pending: deque = deque()
        for unit in units:
            pending.append(task.remote(job_ref, unit))
            if len(pending) >= ahead:
                yield self._get(pending.popleft())
        while pending:
            yield self._get(pending.popleft())

    def _get(self, ref: Any) -> Piece:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            # Bad input found by a task, or the machine saying no (a file gone, permissions): the
            # task's own exception, which the command prints as one line naming the file, rather
            # than Ray's wrapper (a remote traceback with terminal colours).
            if isinstance(cause, (StreamtokError, OSError)):
                raise cause from None
            raise


def absolute_paths(job: EncodeJob) -> EncodeJob:
    """``job`` with its inputs and tokenizer as absolute paths, as a task on any node must open them.

    A Ray worker does not run in the driver's directory: ``tokenize corpus/*.jsonl --engine ray``
    gave every task a path relative to its own working directory (FileNotFoundError).

    Args:
        job: the encoding settings, paths as given on the command line.
    """

    def absolute(path: str) -> str:
        return path if path == "-" or "://" in path else os.path.abspath(path)

    tokenizer = None if job.tokenizer_path is None else absolute(job.tokenizer_path)
    return dataclasses.replace(job, paths=tuple(absolute(p) for p in job.paths), tokenizer_path=tokenizer)


def _check_reachable(address: str | None) -> None:
    # ray.init retries an unreachable GCS for minutes; a plain TCP connect answers in seconds.
    if address is None or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address}: write HOST:PORT of the Ray head (e.g. 10.0.0.1:6379), 'auto', or ray://HOST:10001")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray head answers there ({exc.strerror or exc}); is `ray start --head` running?") from None
