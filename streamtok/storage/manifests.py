"""The ``streamtok tokenize`` manifest beside remote shards: one GET, cached per version.

A prefix that ``streamtok tokenize`` wrote and that was then copied to a bucket holds its
``manifest.json`` beside the shards; the loader and ``streamtok inspect`` read it there as they
read it beside local shards (:mod:`streamtok.documents.boundary` checks what it says). This
module only fetches its bytes:

- when a listing of the prefix saw no ``manifest.json`` object, nothing is asked;
- when the listing saw it, its size and ETag say which version it is, and a copy of that
  version in the local cache (``$STREAMTOK_CACHE_DIR/remote-meta/manifests``, written
  atomically, keyed by a hash of URL, ETag and size) is used without a request;
- otherwise ONE ranged GET reads it (its size and ETag come with the answer), and the copy
  is cached when the store gave an ETag.

Nothing read here is trusted: the caller parses and checks the JSON (a cached copy as well).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from typing import Any

from .._atomic import atomic_write
from ..errors import ShardNotFoundError
from . import urls
from .metacache import cache_root
from .refs import ObjectRef, same_version

NAME = "manifest.json"


def _copy_path(ref: ObjectRef) -> Any:
    tag = hashlib.sha256(f"{ref.url}\n{ref.etag}\n{ref.size}".encode()).hexdigest()[:32]
    return cache_root() / "manifests" / f"{tag}.json"


def _read_copy(ref: ObjectRef) -> bytes | None:
    try:
        with open(_copy_path(ref), "rb") as f:
            data = f.read(ref.size + 1)
    except OSError:
        return None
    return data if len(data) == ref.size else None


def _keep_copy(ref: ObjectRef, data: bytes) -> None:
    path = _copy_path(ref)
    try:
        os.makedirs(path.parent, exist_ok=True)
        with atomic_write(path, fsync=False) as f:
            f.write(data)
    except OSError:
        pass  # nowhere writable: fetched again next time


def manifest_url(shard_url: str) -> str:
    """The URL of the manifest beside the shard at ``shard_url``."""
    u = urls.parse(shard_url)
    folder = posixpath.dirname(u.key)
    return u.child(f"{folder}/{NAME}" if folder else NAME)


def fetch_manifest(shards: Any, shard_url: str, max_bytes: int) -> tuple[str, bytes] | None:
    """``(manifest URL, its bytes)`` of the tokenize manifest beside a remote shard, or ``None``
    when there is none (or it is larger than ``max_bytes``: no tokenize manifest is).

    Args:
        shards: the reader's :class:`~streamtok.storage.RemoteShards` (its store and what its
            listing saw).
        shard_url: a remote shard's URL.
        max_bytes: the largest manifest read.

    Raises:
        RemoteReadError: the store failed past the retry bound, or refused the request.
    """
    url = manifest_url(shard_url)
    if url in shards.known and shards.known[url] is None:
        return None  # the listing of this prefix saw no manifest
    known = shards.known.get(url)
    if known is not None:
        if known.size > max_bytes:
            return None
        if known.etag:
            copy = _read_copy(known)
            if copy is not None:
                return url, copy
    try:
        ref, data = shards.store.run(shards.store.fetch_first_async(url, max_bytes + 1))
    except ShardNotFoundError:
        return None
    if ref.size > max_bytes:
        return None
    body = bytes(data)
    if known is not None and known.size == ref.size and (
            not known.etag_in_reads or not ref.etag or same_version(ref.etag, known.etag or "")):
        ref = known  # the version the listing saw (for an hf:// LFS file, the GET's ETag is a CDN's)
    if ref.etag:
        _keep_copy(ref, body)
    return url, body
