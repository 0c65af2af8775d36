"""streamtok: pre-tokenized shards to training batches, fast, exactly resumable, observable.

The data path, one stage per module::

    ShardLister -> MemmapReader -> WindowSampler -> Collator -> StreamtokLoader -> CUDAPrefetcher
    (shards.py)    (reader.py)     (sampler.py)     (collate.py)  (loader.py)       (prefetch.py)

``streamtok.loader(...)`` builds the common chain in one call.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# Public names load on first use (PEP 562), so that ``import streamtok.metrics`` (the
# monitor's way in) does not import torch: ``from streamtok import CUDAPrefetcher`` and
# ``streamtok.loader(...)`` work as if imported here.
_LAZY = {
    "Collator": "collate", "split": "collate",
    "ConfigError": "errors", "EncodingUnavailableError": "errors", "HubError": "errors",
    "InputFormatError": "errors", "ShardFormatError": "errors", "ShardNotFoundError": "errors",
    "StateMismatchError": "errors", "StreamtokError": "errors", "TokenRangeError": "errors",
    "StreamtokLoader": "loader", "create_dataloaders": "loader", "loader": "loader",
    "CUDAPrefetcher": "prefetch",
    "MemmapReader": "reader",
    "KeyedPermutation": "sampler", "WindowSampler": "sampler",
    "ShardLister": "shards",
}

if TYPE_CHECKING:
    from .collate import Collator, split
    from .errors import (
        ConfigError,
        EncodingUnavailableError,
        HubError,
        InputFormatError,
        ShardFormatError,
        ShardNotFoundError,
        StateMismatchError,
        StreamtokError,
        TokenRangeError,
    )
    from .loader import StreamtokLoader, create_dataloaders, loader
    from .prefetch import CUDAPrefetcher
    from .reader import MemmapReader
    from .sampler import KeyedPermutation, WindowSampler
    from .shards import ShardLister


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamtok' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``import streamtok.loader`` binds the submodule on the package, over the public
    function of the same name: keep the function there, as an eager import did."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = [
    "Collator",
    "ConfigError",
    "CUDAPrefetcher",
    "EncodingUnavailableError",
    "HubError",
    "InputFormatError",
    "KeyedPermutation",
    "MemmapReader",
    "ShardFormatError",
    "ShardLister",
    "ShardNotFoundError",
    "StateMismatchError",
    "StreamtokError",
    "StreamtokLoader",
    "TokenRangeError",
    "WindowSampler",
    "create_dataloaders",
    "loader",
    "split",
]
