"""ObjectRef: one object as a loader was built on it (no secrets: safe to pickle, log and cache)."""

from __future__ import annotations

from dataclasses import dataclass

from . import urls


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
        etag: its ETag (``None`` when the store gives none, or for ``hf://``).
    """

    url: str
    size: int
    etag: str | None = None

    def describe(self, start: int | None = None, stop: int | None = None) -> str:
        """The URL (query cut), with a byte range when given: for messages."""
        where = urls.redact_queries(self.url)
        return where if start is None else f"{where} bytes [{start}, {stop})"
