"""Which remote shards a source names: a prefix, a glob, one object, or a list of URLs.

The same rules as a local directory (:mod:`streamtok.shards`): a prefix ending in ``/`` is a
directory (the ``*.bin`` and ``*.npy`` objects directly under it, not hidden ones, in natural
order: ``shard_2`` before ``shard_10``); a glob (``s3://b/p/*_train_*.bin``) lists the
prefix before its first wildcard and keeps the keys that match, ``*`` not crossing ``/``; a
URL of one object is that shard, and a URL that names no object but has objects under it
is read as a directory. One LIST request per 1000 objects describes them all (size and
ETag), so no shard needs a HEAD.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import posixpath
from collections.abc import Callable

from ..errors import ShardFormatError, ShardNotFoundError
from . import urls
from .manifests import manifest_url
from .refs import ObjectRef
from .store import RemoteStore

SHARD_SUFFIXES = (".bin", ".npy")


def _with_absent_indexes(shards: list[str], known: dict[str, ObjectRef | None]) -> dict[str, ObjectRef | None]:
    """``known`` with ``None`` for the ``.idx`` a listing saw no object for (a ``.bin`` that is no
    Megatron pair), and for the tokenize ``manifest.json`` it saw none of beside a shard, so
    opening asks nothing more about them."""
    for url in shards:
        if url.endswith(".bin"):
            known.setdefault(url[: -len(".bin")] + ".idx", None)
        known.setdefault(manifest_url(url), None)
    return known


def _is_litdata(names: set[str]) -> bool:
    return "index.json" in names and any(n.startswith("chunk-") and n.endswith(".bin") for n in names)


def _directory(store: RemoteStore, url: str, sort_key: Callable[[str], object]) -> tuple[list[str], dict[str, ObjectRef | None]]:
    refs = store.list(url)
    known = {r.url: r for r in refs}
    names = {posixpath.basename(urls.parse(r.url).key) for r in refs}
    if _is_litdata(names):
        raise ShardFormatError(
            f"{url}: this prefix holds a LitData optimized dataset (index.json + chunk-*.bin), not token "
            "shards; read it with litdata's StreamingDataset, or tokenize the text into shards with `streamtok tokenize`"
        )
    shards = [r.url for r in refs if r.url.endswith(SHARD_SUFFIXES) and not posixpath.basename(r.url).startswith(".")]
    return sorted(shards, key=sort_key), _with_absent_indexes(shards, known)


def list_remote(source: str, store: RemoteStore, sort_key: Callable[[str], object]) -> tuple[list[str], dict[str, ObjectRef | None]]:
    """``(shard URLs in order, every object seen by its URL)`` for one remote source (``None``:
    a ``.bin``'s ``.idx`` known to be absent).

    Raises:
        ShardNotFoundError: nothing matches.
        ShardFormatError: the prefix holds a LitData dataset.
    """
    u = urls.parse(source)
    if u.scheme == "hf":
        from .hub import list_hub

        return list_hub(source, store.options, sort_key)
    if u.scheme in ("http", "https") and not globlib.has_magic(u.key):
        if source.endswith("/"):
            shards, known = _directory(store, source, sort_key)  # a WebDAV listing, when the server has one
            if not shards:
                raise ShardNotFoundError(f"{urls.redact_queries(source)}: the listing holds no shard objects (*.bin or *.npy)")
            return shards, known
        return [source], {}
    if globlib.has_magic(u.key):
        cut = min(i for i, ch in enumerate(u.key) if ch in "*?[")
        base = u.key[: u.key.rfind("/", 0, cut) + 1]
        refs = store.list(u.child(base), recursive=True)
        depth = u.key.count("/")
        matched = [r.url for r in refs
                   if urls.parse(r.url).key.count("/") == depth and fnmatch.fnmatchcase(urls.parse(r.url).key, u.key)]
        if not matched:
            raise ShardNotFoundError(f"{source}: no objects match this pattern")
        return sorted(matched, key=sort_key), _with_absent_indexes(matched, {r.url: r for r in refs})
    if source.endswith("/") or not u.key:
        shards, known = _directory(store, source if source.endswith("/") else source + "/", sort_key)
        if not shards:
            raise ShardNotFoundError(f"{source}: no shard objects (*.bin or *.npy) under this prefix")
        return shards, known
    try:
        ref = store.head_many([source])[0]
    except ShardNotFoundError:
        shards, known = _directory(store, source + "/", sort_key)
        if not shards:
            raise ShardNotFoundError(f"{source}: no such object, and no shard objects under {source}/") from None
        return shards, known
    known = {source: ref}
    if source.endswith(".bin"):  # a Megatron pair? (opening needs to know, and it is one HEAD)
        index = source[: -len(".bin")] + ".idx"
        try:
            known[index] = store.head_many([index])[0]
        except ShardNotFoundError:
            known[index] = None
    return [source], known
