"""ObjectRef: one object as a loader was built on it (no secrets: safe to pickle, log and cache)."""

from __future__ import annotations

from dataclasses import dataclass

from . import urls


def same_version(a: str, b: str) -> bool:
    """Whether two ETags name one version (a weak ``W/"x"`` and a strong ``"x"`` do, quoted or not)."""
    def bare(tag: str) -> str:
        return (tag[2:] if tag.startswith("W/") else tag).strip('"')

    return bare(a) == bare(b)


def normalize_etag(etag: str | None) -> str | None:
    """``etag`` in its quoted HTTP form (``"abc"``; a weak ``W/"abc"`` as it is).

    Stores spell one ETag two ways: Azure's and GCS's listings give it bare (``0x8D1...``),
    their HEAD and GET answers quoted (``"0x8D1..."``). Compared or cached as given, the
    version a listing saw would never equal the one a HEAD or GET reports; quoted, it does,
    and it is the form an ``If-Match`` header takes.
    """
    if not etag:
        return None
    if etag.startswith('"') or etag.startswith("W/"):
        return etag
    return f'"{etag}"'


@dataclass(frozen=True)
class ObjectRef:
    """One object as the loader saw it when it was built: where, how big, which version.

    Args:
        url: the object's URL.
        size: its size in bytes.
        etag: its ETag, quoted (``None`` when the store gives none). For ``hf://`` files, the
            Hub's version of the file: its git blob id, or an LFS file's sha256.
        etag_in_reads: whether the store's answers to reads carry ``etag`` (so that each GET
            is checked against it). ``False`` for an ``hf://`` LFS file, whose bytes come from a
            CDN with ETags of its own: its version is then checked when it is opened (listing
            or metadata), not on each read.
    """

    url: str
    size: int
    etag: str | None = None
    etag_in_reads: bool = True

    def describe(self, start: int | None = None, stop: int | None = None) -> str:
        """The URL (query cut), with a byte range when given: for messages."""
        where = urls.redact_queries(self.url)
        return where if start is None else f"{where} bytes [{start}, {stop})"
