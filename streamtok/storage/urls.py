"""Object URLs: which paths are remote, and their parts.

A shard path is remote when it is a URL of a scheme streamtok reads: ``s3://bucket/key``,
``gs://bucket/key``, ``az://container/key`` (also ``abfs://``), ``https://host/path`` (and
``http://`` for a local test server), and ``hf://datasets/OWNER/NAME/path`` (a Hugging Face
dataset repo; ``hf://datasets/OWNER/NAME@REVISION/path`` picks a revision). Anything else is a
local path. Parsing is pure string work: no request is made here.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

REMOTE_SCHEMES = ("s3", "gs", "az", "abfs", "https", "http", "hf")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
_QUERY = re.compile(r"(\b(?:https?|s3|gs|az|abfs|hf)://[^\s?#'\"]*)[?#][^\s'\"]*")


def scheme_of(path: object) -> str | None:
    """The URL scheme of ``path`` when it is a remote URL streamtok reads, else ``None``."""
    if not isinstance(path, str):
        return None
    m = _SCHEME.match(path)
    if m is None:
        return None
    scheme = m.group(1).lower()
    return scheme if scheme in REMOTE_SCHEMES else None


def is_remote(path: object) -> bool:
    """Whether ``path`` names an object in a store rather than a local file."""
    return scheme_of(os.fspath(path) if isinstance(path, os.PathLike) else path) is not None


@dataclass(frozen=True)
class Url:
    """A parsed object URL: the store (``scheme://root``) and the key inside it.

    ``root`` is the bucket (s3, gs), container (az), host (http/https) or ``datasets/OWNER/NAME``
    (hf); ``key`` has no leading slash.
    """

    scheme: str
    root: str
    key: str

    @property
    def store_url(self) -> str:
        return f"{self.scheme}://{self.root}"

    def child(self, key: str) -> str:
        """The URL of ``key`` in the same store."""
        return f"{self.store_url}/{key}"

    def __str__(self) -> str:
        return self.child(self.key)


def parse(url: str) -> Url:
    """Split a remote URL into store and key.

    Raises:
        ValueError: ``url`` is not a remote URL or has no bucket/host.
    """
    scheme = scheme_of(url)
    if scheme is None:
        raise ValueError(f"{url}: not a remote URL (one of {', '.join(s + '://' for s in REMOTE_SCHEMES)})")
    rest = url[len(scheme) + 3 :]
    if scheme == "hf":
        parts = rest.split("/", 3)
        if len(parts) < 3 or parts[0] not in ("datasets", "models", "spaces"):
            raise ValueError(f"{url}: an hf:// URL is hf://datasets/OWNER/NAME[/path]")
        return Url(scheme, "/".join(parts[:3]), parts[3] if len(parts) > 3 else "")
    root, _, key = rest.partition("/")
    if not root:
        raise ValueError(f"{url}: no bucket or host")
    return Url(scheme, root, key)


def basename(path: str) -> str:
    """The last part of a local path or of a URL's key (what fingerprints and split names use)."""
    if is_remote(path):
        return posixpath.basename(parse(path).key.split("?", 1)[0])
    return os.path.basename(path)


def dirname(path: str) -> str:
    """The directory of a local path, or the URL up to the last ``/`` of its key."""
    if is_remote(path):
        u = parse(path)
        return u.child(posixpath.dirname(u.key)) if "/" in u.key else u.store_url
    return os.path.dirname(path)


def redact_queries(text: str) -> str:
    """``text`` with the query strings of URLs cut (signed URLs carry tokens there)."""
    return _QUERY.sub(r"\1?…", text)
