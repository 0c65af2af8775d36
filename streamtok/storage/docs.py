"""Document indexes of remote shards: fetched or built once, cached on the local disk.

In order of cost: (1) the local cache (``<cache_dir>/remote/<hash of URL, ETag, bos>.npy``:
the object's ETag ties it to one version); (2) a Megatron shard's ``.idx`` (one GET);
(3) the scan: the shard's token bytes fetched in 8 MiB ranges, concurrently, and compared with
the boundary token (the whole shard crosses the network once, and never again for that
version). A ``.docidx`` uploaded beside a shard is not used: an index is trusted only when it
provably belongs to the bytes (:mod:`streamtok.documents.sidecar` keys it by the sha256 of the whole
shard), which a remote reader could check only by reading the whole shard, i.e. by the scan.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._formats import parse_megatron_index
from ..documents.sidecar import cache_dir, default_bos_id
from .refs import ObjectRef

_SCAN_BYTES = 8 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _cache_path(ref: ObjectRef, bos_id: int | None) -> Any:
    tag = hashlib.sha256(f"{ref.url}\n{ref.etag}\n{ref.size}\n{bos_id}".encode()).hexdigest()[:24]
    return cache_dir() / "remote" / f"{tag}.npy"


def _load_cached(path: Any, n_tokens: int) -> np.ndarray | None:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if arr.dtype != np.int64 or arr.ndim != 1 or (len(arr) and (int(arr[-1]) >= n_tokens or int(arr[0]) < 0)):
        return None
    return np.asarray(arr)


def _scan(shards: Any, k: int, bos_id: int, digest: Any = None) -> np.ndarray:
    """The starts of shard ``k``'s documents; with ``digest`` (a hashlib object), the whole
    object (header and any bytes after the tokens too) is fed to it, in order, by the same reads."""
    info, ref = shards.infos[k], shards.objects[k]
    if not 0 <= bos_id <= np.iinfo(info.dtype).max:
        if digest is None:
            return np.zeros(0, dtype=np.int64)
        bos_id = -1  # no token can be it: the bytes are read for the digest alone
    size = info.dtype.itemsize
    step = _SCAN_BYTES - _SCAN_BYTES % size
    end = info.offset + info.nbytes
    spans = [(ref, a, min(end, a + step)) for a in range(info.offset, end, step)]
    if digest is not None:
        spans = ([(ref, 0, info.offset)] if info.offset else []) + spans + ([(ref, end, ref.size)] if ref.size > end else [])
    parts = []
    for (_, a, b), data in zip(spans, shards.store.fetch_ranges(spans)):
        if digest is not None:
            digest.update(data)
        if info.offset <= a < end and bos_id >= 0:
            parts.append(np.flatnonzero(np.frombuffer(data, dtype=info.dtype) == bos_id) + (a - info.offset) // size)
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, dtype=np.int64)


def _save_starts(target: Any, starts: np.ndarray) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, fsync=False) as f:
            np.lib.format.write_array(f, starts, allow_pickle=False)
    except OSError:
        pass  # nowhere writable: used uncached


def _digest_path(ref: ObjectRef) -> Any:
    tag = hashlib.sha256(f"{ref.url}\n{ref.etag}\n{ref.size}\nsha256".encode()).hexdigest()[:24]
    return cache_dir() / "remote" / f"{tag}.sha256"


def _load_digest(path: Any) -> str | None:
    try:
        with open(path, "rb") as f:
            text = f.read(65).decode("ascii", "replace")
    except OSError:
        return None
    return text if _SHA256.fullmatch(text) else None


def remote_sha256_and_starts(shards: Any, k: int, *, bos_id: int) -> tuple[str, np.ndarray]:
    """The sha256 of remote shard ``k`` (the whole object) and its document starts at ``bos_id``.

    Both are cached locally per version of the object (URL, ETag, size); whatever is missing
    is computed from ONE read of the object, so checking a tokenize manifest's sha256 costs
    nothing more than the document index the loader builds next (and a restart nothing at
    all). An object without an ETag gets its digest computed again on each open.

    Args:
        shards: the reader's :class:`~streamtok.storage.RemoteShards`.
        k: the shard (not a Megatron one).
        bos_id: the boundary token to find.
    """
    ref = shards.objects[k]
    target, digest_path = _cache_path(ref, bos_id), _digest_path(ref)
    starts = _load_cached(target, shards.infos[k].n_tokens)
    digest = _load_digest(digest_path) if ref.etag else None
    if starts is not None and digest is not None:
        return digest, starts
    h = hashlib.sha256()
    starts = np.ascontiguousarray(_scan(shards, k, bos_id, h), dtype=np.int64)
    digest = h.hexdigest()
    _save_starts(target, starts)
    if ref.etag:
        try:
            digest_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(digest_path, fsync=False) as f:
                f.write(digest.encode())
        except OSError:
            pass
    return digest, starts


def remote_document_starts(shards: Any, k: int, *, bos_id: int | None) -> np.ndarray:
    """Token offsets where the documents of remote shard ``k`` start (see the module docstring).

    Args:
        shards: the reader's :class:`~streamtok.storage.RemoteShards`.
        k: the shard.
        bos_id: the boundary token; default from the format.
    """
    info, ref = shards.infos[k], shards.objects[k]
    if info.kind == "megatron":
        bos_id = None
    elif bos_id is None:
        bos_id = default_bos_id(info)
    target = _cache_path(ref, bos_id)
    found = _load_cached(target, info.n_tokens)
    if found is not None:
        return found
    if info.kind == "megatron":
        index_ref = shards.index_objects[k]
        raw = np.frombuffer(bytes(shards.store.fetch_range(index_ref, 0, index_ref.size)), dtype=np.uint8)
        index = parse_megatron_index(index_ref.url, raw[:64].tobytes(), index_ref.size, lambda: raw)
        seq_starts = np.concatenate(([0], np.cumsum(index.sequence_lengths, dtype=np.int64)))
        starts = seq_starts[np.asarray(index.document_indices[:-1])]
    else:
        starts = _scan(shards, k, bos_id)  # type: ignore[arg-type]
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    _save_starts(target, starts)
    return starts
