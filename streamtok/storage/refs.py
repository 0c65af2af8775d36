"""ObjectRef: one object as a loader was built on it (no secrets: safe to pickle, log and cache)."""

from __future__ import annotations

from dataclasses import dataclass

from . import urls


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
