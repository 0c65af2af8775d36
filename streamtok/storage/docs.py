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
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._formats import parse_megatron_index
from ..documents.sidecar import cache_dir, default_bos_id
from .refs import ObjectRef

_SCAN_BYTES = 8 << 20


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


def _scan(shards: Any, k: int, bos_id: int) -> np.ndarray:
    info, ref = shards.infos[k], shards.objects[k]
    if not 0 <= bos_id <= np.iinfo(info.dtype).max:
        return np.zeros(0, dtype=np.int64)
    size = info.dtype.itemsize
    step = _SCAN_BYTES - _SCAN_BYTES % size
    spans = [(ref, a, min(info.offset + info.nbytes, a + step)) for a in range(info.offset, info.offset + info.nbytes, step)]
    parts = []
    for (_, a, _), data in zip(spans, shards.store.fetch_ranges(spans)):
        parts.append(np.flatnonzero(np.frombuffer(data, dtype=info.dtype) == bos_id) + (a - info.offset) // size)
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, dtype=np.int64)


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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, fsync=False) as f:
            np.lib.format.write_array(f, starts, allow_pickle=False)
    except OSError:
        pass  # nowhere writable: used uncached
    return starts
