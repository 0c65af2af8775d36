"""Helpers for the block cache tests: a remote object, an obstore fetch, a child process that reads.

Run as a script, it is one process of a node sharing a cache directory:
``python blocks_client.py SPEC.json OUT.json`` reads the windows the spec lists through a
:class:`BlockCache` and writes the sha256 of what it read and its counters.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Obj:
    """A remote object as the cache sees it."""

    url: str
    size: int
    etag: str


def store_for(bucket: str, endpoint: str):  # noqa: ANN201
    from obstore.store import S3Store

    return S3Store(bucket, endpoint=endpoint, allow_http=True, region="us-east-1",
                   access_key_id="streamtok-test-key", secret_access_key="streamtok-SECRET-do-not-leak-7f3a9c")


def objects(store, bucket: str, keys: list[str]) -> list[Obj]:  # noqa: ANN001
    import obstore

    # a listing, not HEAD: the test proxy answers HEAD with Content-Length 0
    metas = {m["path"]: m for batch in obstore.list(store) for m in batch}
    return [Obj(f"s3://{bucket}/{key}", int(metas[key]["size"]), str(metas[key]["e_tag"])) for key in keys]


def fetcher(store):  # noqa: ANN001, ANN201
    import obstore

    def fetch(obj: Obj, start: int, stop: int) -> bytes:
        key = obj.url.split("/", 3)[3]
        return bytes(obstore.get_range(store, key, start=start, end=stop))

    return fetch


def main(spec_path: str, out_path: str) -> None:
    from streamtok.storage.blocks import BlockCache

    spec = json.load(open(spec_path))
    store = store_for(spec["bucket"], spec["endpoint"])
    objs = objects(store, spec["bucket"], spec["keys"])
    cache = BlockCache(spec["cache_dir"], limit_bytes=spec["limit"], block_bytes=spec["block"],
                       fetch=fetcher(store), prefetch_blocks=spec["prefetch"])
    reads = [(i, objs[k], a, b) for i, (k, a, b) in enumerate(spec["reads"])]
    cache.plan(reads)
    digest = hashlib.sha256()
    for pos, obj, a, b in reads:
        cache.advance(pos)
        digest.update(cache.read(obj, a, b))
    cache.close()
    c = cache.counters
    with open(out_path, "w") as f:
        json.dump({"sha": digest.hexdigest(), "downloads": c.downloads, "hits": c.hits, "pid": os.getpid()}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
