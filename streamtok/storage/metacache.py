"""A local cache of what opening remote shards learned, so that a restart reads no headers.

For each object: its size and ETag (what the entry is valid for), its layout (format, dtype,
data offset, token count) and its fingerprint sample (the first and last 4 KiB of its
tokens). On the next open, a shard whose listed (or HEAD) size and ETag equal the entry's
is not read at all; any other is probed again. Objects without an ETag are never cached (a
size alone does not tell versions apart).

One JSON file per set of URLs, under ``$STREAMTOK_CACHE_DIR/remote-meta`` (default
``~/.cache/streamtok/remote-meta``), written atomically. Entries are keyed by a hash of the
URL (a signed URL's query string never reaches the disk) and everything read back is
checked (types, sizes) before use; a damaged file is ignored and rewritten.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._formats import ShardInfo
from .probe import FINGERPRINT_BYTES, Probed
from .refs import ObjectRef

VERSION = 1


def cache_root() -> Path:
    root = os.environ.get("STREAMTOK_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "streamtok") / "remote-meta"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class MetaCache:
    """The metadata cache file of one set of remote shards."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def for_urls(cls, urls: Sequence[str], raw_dtype: np.dtype) -> MetaCache:
        key = _hash("\n".join(sorted(urls)) + f"\n{np.dtype(raw_dtype).str}")
        return cls(cache_root() / f"{key}.json")

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("objects"), dict):
            return {}
        return data["objects"]

    def lookup(self, refs: Mapping[str, ObjectRef], want: Sequence[str]) -> dict[str, Probed]:
        """The shards of ``want`` whose cached entry matches their current size and ETag."""
        entries = self._load()
        found: dict[str, Probed] = {}
        for url in want:
            ref, entry = refs.get(url), entries.get(_hash(url))
            if ref is None or not ref.etag or not isinstance(entry, dict):
                continue
            try:
                if entry["size"] != ref.size or entry["etag"] != ref.etag:
                    continue
                dtype = np.dtype(entry["dtype"])
                info = ShardInfo(url, str(entry["kind"]), dtype, int(entry["offset"]), int(entry["n_tokens"]),
                                 None if entry["version"] is None else int(entry["version"]))
                sample = base64.b64decode(entry["sample"], validate=True)
                index = entry["index"]
                index_ref = None if index is None else ObjectRef(str(index[0]), int(index[1]), index[2])
            except (KeyError, TypeError, ValueError):
                continue
            n = min(FINGERPRINT_BYTES, info.nbytes)
            if dtype.kind not in "iu" or info.offset + info.nbytes != ref.size or len(sample) != 2 * n:
                continue
            found[url] = Probed(ref, info, sample, index_ref)
        return found

    def store(self, probed: Sequence[Probed]) -> None:
        """Record these shards (best effort: an unwritable cache is skipped)."""
        objects = {
            _hash(p.ref.url): {
                "size": p.ref.size, "etag": p.ref.etag, "kind": p.info.kind, "dtype": p.info.dtype.str,
                "offset": p.info.offset, "n_tokens": p.info.n_tokens, "version": p.info.version,
                "sample": base64.b64encode(p.sample).decode(),
                "index": None if p.index is None else [p.index.url, p.index.size, p.index.etag],
            }
            for p in probed if p.ref.etag
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.path, "w", fsync=False) as f:
                json.dump({"version": VERSION, "objects": objects}, f)
        except OSError:
            pass
