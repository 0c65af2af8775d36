"""The errors streamtok raises: one base class, small subclasses grouped by what went wrong.

Every message names the file (or setting) and the offending value, and says what to do.
"""

from __future__ import annotations


class StreamtokError(Exception):
    """Base class of every error streamtok raises on purpose."""


class ShardNotFoundError(StreamtokError, FileNotFoundError):
    """A path, directory or glob named no shard file."""


class ShardFormatError(StreamtokError, ValueError):
    """A shard file is empty, truncated, or has a header streamtok cannot read."""


class TokenRangeError(StreamtokError, ValueError):
    """A token id is not below the vocabulary size."""


class ConfigError(StreamtokError, ValueError):
    """Settings that cannot work together or with this data (window too long, too few shards)."""


class StateMismatchError(StreamtokError, ValueError):
    """A saved state_dict was made under another configuration or other data."""


class BoundaryMismatchError(StateMismatchError):
    """A saved state's rows were split at another boundary token than this loader's (both named)."""


class PassActiveError(StreamtokError, RuntimeError):
    """An operation needs the loader between passes, but a pass over it is still running."""


class EncodingUnavailableError(StreamtokError, RuntimeError):
    """A tokenizer encoding's files cannot be found or downloaded."""


class HubError(StreamtokError, RuntimeError):
    """A shard could not be had from the Hugging Face Hub (offline, missing, or refused)."""


class InputFormatError(StreamtokError, ValueError):
    """An input text file cannot be read as documents (bad UTF-8, bad JSON line, no text field)."""


class StorageError(StreamtokError, OSError):
    """Bytes could not be had from an object store (the message names the object and the range)."""


class RemoteReadError(StorageError):
    """A ranged read failed past the retry bound, or was refused (no permission, bad request)."""


class ObjectChangedError(StorageError):
    """An object's ETag or size differs from what the loader was built on: it changed under it."""
