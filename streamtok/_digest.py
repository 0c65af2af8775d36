"""The sha256 of a whole file, computed once per version of the file.

A document index is used only for the bytes it was built from (issue 19): its key holds the
sha256 of the whole shard. Hashing a shard costs a full read (sha256: ~0.3-1 GiB/s per core,
about as long as the scan that builds an index), so the digest is remembered in
``$STREAMTOK_CACHE_DIR/sha256/`` (see :func:`streamtok.documents.sidecar.cache_dir`) under the file's
*stamp*: inode, device, size, mtime and ctime (ns). Any write, truncation, ``utime`` (as
``rsync -t`` or a restore does to keep an old mtime) or rename moves the ctime or the inode,
and no tool can set a ctime back, so an unchanged stamp means unchanged bytes; a new stamp
(a copied dataset, an edited shard) costs one hash again. Where the cache directory cannot be
written, the file is hashed every time a loader opens it.

The stamp is taken before and after hashing: a file that changes meanwhile is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ._atomic import write_json_atomic
from ._shardfile import Stamp, stamp_of
from .errors import ShardFormatError

_BLOCK = 1 << 24  # bytes hashed per read (hashlib releases the GIL on blocks this large)


def memo_path(path: str, cache: Path) -> Path:
    """Where the digest of ``path`` is remembered (one small JSON file per shard)."""
    absolute = os.path.abspath(path)
    tag = hashlib.sha256(absolute.encode()).hexdigest()[:16]
    return cache / "sha256" / f"{os.path.basename(absolute)}.{tag}.json"


def _recall(memo: Path, stamp: Stamp) -> str | None:
    try:
        if memo.stat().st_size > 4096:
            return None
        with open(memo) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("stamp") != list(stamp):
        return None
    digest = saved.get("sha256")
    if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return digest
    return None


def file_sha256(path: str, cache: Path | None) -> str:
    """The sha256 hex digest of the whole file ``path``, remembered per stamp under ``cache``.

    Args:
        path: the file.
        cache: the cache directory (``None``: hash, remember nothing).
    """
    return file_digest(path, cache)[0]


def file_digest(path: str, cache: Path | None) -> tuple[str, Stamp]:
    """:func:`file_sha256` and the stamp of the file version it is the digest of.

    Args:
        path: the file.
        cache: the cache directory (``None``: hash, remember nothing).

    Raises:
        ShardFormatError: the file changed while it was hashed, or cannot be read.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            before = stamp_of(os.fstat(f.fileno()))
            memo = memo_path(path, cache) if cache is not None else None
            known = _recall(memo, before) if memo is not None else None
            if known is not None:
                return known, before
            h = hashlib.sha256()
            while block := f.read(_BLOCK):
                h.update(block)
            after = stamp_of(os.fstat(f.fileno()))
    except OSError as exc:
        raise ShardFormatError(f"{path}: cannot be read to checksum it ({exc.strerror})") from None
    if after != before:
        raise ShardFormatError(f"{path}: the file changed while its checksum was computed; is something writing it?")
    digest = h.hexdigest()
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(memo, {"stamp": list(before), "sha256": digest}, fsync=False)
        except OSError:
            pass  # a read-only cache: hashed again next time
    return digest, before
