"""streamtok: pre-tokenized shards to training batches, fast, exactly resumable, observable.

The data path, one stage per module, each importing only the ones below it::

    prefetch.py    CUDAPrefetcher   batches staged on the device, state as consumed
    dataloader.py  StreamtokLoader  StatefulDataLoader, workers, ranks, state_dict | nodes.py: the
    collate.py     Collator         B window starts -> one compact buffer -> (x, y) | same stages as
    sampler.py     WindowSampler    which windows, in what order, for whom         | torchdata nodes
    reader.py      MemmapReader     one virtual token array over the shards
    shards.py      ShardLister      which files, in order, and how they split

Wings, each a sub-package the stages do not import: ``documents/`` (document-aware rows),
``mixture/`` (weighted sources), ``metrics/`` (what ``streamtok-monitor`` reads), ``bench/``;
under the reader, ``storage/`` (object stores); beside it, ``prep/`` (tokenize, download,
inspect) and ``frameworks/``. ``streamtok.loader(...)`` (``build.py``) picks the stages and
wings for its options in one call. Names are imported on first use, so
``import streamtok.metrics`` (what ``streamtok-monitor`` needs) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _chain
from ._lazy import lazy_names
from .errors import (
    BoundaryMismatchError,
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
    "StreamtokLoader": "dataloader",
    "create_dataloaders": "build",
    "loader": "build",
    "Mixture": "mixture.collate",
    "MixtureSampler": "mixture.sampler",
    "Documents": "documents.index",
    "document_stats": "documents.sidecar",
    "write_document_index": "documents.sidecar",
}
# Imported when a chained form (``sampler.batch(...)``, ``collator.loader(...)``) is missing.
_STAGES = ("reader", "sampler", "collate", "mixture.collate", "dataloader", "build", "prefetch")

__all__ = sorted(
    [
        "BoundaryMismatchError",
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


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


def _import_stages() -> None:
    for module in _STAGES:
        importlib.import_module(f".{module}", __name__)


def _hub_lister(repo_id: str, shards: Any = None, **kw: Any) -> Any:
    from .prep.hub import hub_lister

    return hub_lister(repo_id, shards=shards, **kw)


# The data path does not import the command-line tools; the package offers the Hub to it.
_chain.provide("hub_lister", _hub_lister)
_chain.on_missing_form(_import_stages)
