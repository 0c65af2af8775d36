"""Where shard bytes come from: a local memory map, or an object store (s3, gs, az, https, hf).

This package sits under the reader. ``MemmapReader`` keeps its token arithmetic and asks, for
each shard it does not hold on local disk, :class:`~streamtok.storage.remote.RemoteShards`
for byte ranges; samplers, mixtures, documents, nodes and the prefetcher do not know where
the bytes come from. Modules:

- :mod:`.urls`: which paths are remote, and their parts (pure string work);
- :mod:`.options`: ``storage_options=`` and the environment chains; redaction of secrets;
- :mod:`.store`: :class:`RemoteStore`, ranged GET / HEAD / LIST with bounded, counted retries;
- :mod:`.listing`: a prefix, a glob or a URL to shard URLs, in natural order;
- :mod:`.probe`: sizes, headers and fingerprint samples, all shards at once;
- :mod:`.metacache`: what opening learned, kept locally and checked against ETag and size;
- :mod:`.windows`: the "windows" strategy, exact ranges fetched ahead of need;
- :mod:`.remote`: :class:`RemoteShards`, what the reader holds; ``fetch=`` picks the strategy;
- :mod:`.hub`: ``hf://`` URLs (the local Hugging Face cache, else ranged HTTP);
- :mod:`.manifests`: the ``streamtok tokenize`` manifest beside remote shards (one GET, cached).

The interface a strategy builds on (the "blocks" cache plugs in here):

- ``ObjectRef(url, size, etag, etag_in_reads=True)``: an object as the loader was built on it
  (ETags quoted: ``normalize_etag``). Frozen, picklable, no secrets.
- ``RemoteStore(storage_options)``: one per reader, per process (it rebuilds its clients in a
  new process). ``store.fetch_range(obj, start, stop) -> memoryview`` returns exactly bytes
  ``[start, stop)`` of that version of the object, or raises: ``RemoteReadError`` (failed
  past the retry bound, or refused; the message names the object and the range) or
  ``ObjectChangedError`` (ETag or size differ). ``await store.fetch_range_async(...)`` is the
  same on the storage loop; ``store.submit(coro)`` runs a coroutine there and returns a
  ``concurrent.futures.Future``; ``store.counters`` counts requests, bytes, retries, requests in
  flight and failures in this process.
- A fetcher (``make_fetcher(fetch, store, objects, cache_dir=, cache_limit=)``): an object
  with ``prefetch(key, ranges)`` (start getting the byte ranges ``[(shard, start, stop),
  ...]`` of a coming step called ``key``; called ``lookahead`` steps ahead, in the order the
  steps will be read) and ``read(key, ranges) -> [bytes-like, ...]`` (exactly those ranges,
  in order; fetched then if not prefetched). ``objects`` maps shard index to ``ObjectRef``.
  ``fetch="blocks"`` imports ``streamtok.storage.blocks.BlockFetcher`` with that signature.
"""

from __future__ import annotations

from .options import StorageOptions, redact
from .refs import ObjectRef
from .remote import FETCH_STRATEGIES, RemoteShards, make_fetcher
from .store import NetCounters, RemoteStore
from .urls import is_remote

__all__ = [
    "FETCH_STRATEGIES",
    "NetCounters",
    "ObjectRef",
    "RemoteShards",
    "RemoteStore",
    "StorageOptions",
    "is_remote",
    "make_fetcher",
    "redact",
]
