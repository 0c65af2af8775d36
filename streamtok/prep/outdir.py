"""The output directory of ``streamtok tokenize``: one writer at a time, and nothing foreign in it.

A run holds an exclusive ``filelock`` on ``<out>/.streamtok-tokenize.lock`` for its whole
life; a second run on the same directory fails at once instead of deleting the first one's
temporary files. The lock is advisory (``flock``) and released by the kernel when its holder
dies, so a kill -9 never leaves a stale lock behind.

A directory is accepted when it is empty, or holds only this command's own files
(``manifest.json``, ``<prefix>_{val,train}_NNNNNN.<format>`` shards and their ``.docidx``
document indexes, plus hidden temporary files); anything else -- another dataset's ``*.bin``,
a manifest of other settings -- is refused unless ``overwrite`` is given, because the loader
would read every ``*.bin`` in it. ``overwrite`` deletes the old manifest, every shard-like file
(``*.bin``, ``*.npy``) and their ``.docidx`` indexes, and leaves other files alone.
"""

from __future__ import annotations

import os
from typing import Any

from ..documents.sidecar import SIDECAR_SUFFIX
from ..errors import ConfigError
from ..shards import SHARD_SUFFIXES
from .manifest import MANIFEST, shard_name_pattern

LOCK_NAME = ".streamtok-tokenize.lock"


def prepare_out_dir(out_dir: str) -> None:
    """Create ``out_dir`` (and parents) or check that it is a writable directory.

    Args:
        out_dir: the ``--out`` directory.

    Raises:
        ConfigError: it exists and is not a directory, or cannot be created.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir}: exists and is not a directory; give a directory for the shards")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create the directory ({exc.strerror})") from None


def lock_out_dir(out_dir: str) -> Any:
    """Take the directory's lock without waiting; the caller releases it (a context manager).

    Args:
        out_dir: an existing directory.

    Raises:
        ConfigError: another run holds it.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(os.path.join(out_dir, LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"--out {out_dir}: another streamtok tokenize is writing to this directory (it holds "
            f"{LOCK_NAME}); wait for it to finish or use another --out"
        ) from None
    return lock


def foreign_entries(out_dir: str, prefix: str, shard_format: str) -> list[str]:
    """Visible entries of ``out_dir`` that this command with these settings would not write.

    Args:
        out_dir: the output directory.
        prefix: the shard name prefix.
        shard_format: ``"bin"`` or ``"npy"``.
    """
    own = shard_name_pattern(prefix, shard_format)
    return sorted(
        name for name in os.listdir(out_dir)
        if not name.startswith(".") and name != MANIFEST and not own.fullmatch(name.removesuffix(SIDECAR_SUFFIX))
    )


def clear_out_dir(out_dir: str) -> list[str]:
    """Delete the manifest and every shard-like file of ``out_dir`` (for ``--overwrite``).

    Args:
        out_dir: the output directory.

    Returns:
        The names deleted.
    """
    gone = []
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        shard_like = name.removesuffix(SIDECAR_SUFFIX).endswith(SHARD_SUFFIXES)
        if (name == MANIFEST or shard_like) and (os.path.islink(path) or os.path.isfile(path)):
            os.unlink(path)
            gone.append(name)
    return gone
