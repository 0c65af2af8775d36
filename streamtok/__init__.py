"""streamtok: pre-tokenized shards to training batches, fast, exactly resumable, observable.

The data path, one stage per module, each importing only the ones below it::

    prefetch.py   CUDAPrefetcher   batches staged on the device, state as consumed
    loader.py     StreamtokLoader  StatefulDataLoader, workers, ranks, state_dict  | nodes.py: the
    collate.py    Collator         B window starts -> one compact buffer -> (x, y) | same stages as
    sampler.py    WindowSampler    which windows, in what order, for whom          | torchdata nodes
    reader.py     MemmapReader     one virtual token array over memory-mapped shards
    shards.py     ShardLister      which files, in order, and how they split

``streamtok.loader(...)`` builds the common chain in one call. Names are imported on first
use, so ``import streamtok.metrics`` (what ``streamtok-monitor`` needs) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from . import _chain
from .errors import (
    ConfigError,
    EncodingUnavailableError,
    HubError,
    InputFormatError,
    ObjectChangedError,
    PassActiveError,
    RemoteReadError,
    ShardFormatError,
    ShardNotFoundError,
    StateMismatchError,
    StorageError,
    StreamtokError,
    TokenRangeError,
)

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first access).
_LAZY = {
    "Collator": "collate",
    "split": "collate",
    "CUDAPrefetcher": "prefetch",
    "KeyedPermutation": "_order",
    "MemmapReader": "reader",
    "ShardLister": "shards",
    "WindowSampler": "sampler",
    "StreamtokLoader": "loader",
    "create_dataloaders": "loader",
    "loader": "loader",
    "Mixture": "mixture",
    "MixtureSampler": "mixture",
    "Documents": "boundaries",
    "document_stats": "documents",
    "write_document_index": "documents",
}
_STAGES = ("reader", "sampler", "collate", "mixture", "loader", "prefetch")

__all__ = sorted(
    [
        "ConfigError",
        "EncodingUnavailableError",
        "HubError",
        "InputFormatError",
        "ObjectChangedError",
        "PassActiveError",
        "RemoteReadError",
        "ShardFormatError",
        "ShardNotFoundError",
        "StateMismatchError",
        "StorageError",
        "StreamtokError",
        "TokenRangeError",
        *_LAZY,
    ],
    key=str.lower,
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamtok' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _import_stages() -> None:
    for module in _STAGES:
        importlib.import_module(f".{module}", __name__)


class _Package(types.ModuleType):
    # Importing the submodule streamtok.loader makes Python set the attribute `loader` of this
    # package to that module, hiding the function streamtok.loader(...): keep the function.
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


def _hub_lister(repo_id: str, shards: Any = None, **kw: Any) -> Any:
    from .prep.hub import hub_lister

    return hub_lister(repo_id, shards=shards, **kw)


# The data path does not import the command-line tools; the package offers the Hub to it.
_chain.provide("hub_lister", _hub_lister)
_chain.on_missing_form(_import_stages)
sys.modules[__name__].__class__ = _Package
