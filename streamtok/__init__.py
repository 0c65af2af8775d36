"""streamtok: pre-tokenized shards to training batches, fast, exactly resumable, observable.

The data path, one stage per module::

    ShardLister -> MemmapReader -> WindowSampler -> Collator -> StreamtokLoader -> CUDAPrefetcher
    (shards.py)    (reader.py)     (sampler.py)     (collate.py)  (loader.py)       (prefetch.py)

``streamtok.loader(...)`` builds the common chain in one call.
"""

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
from .mixture import Mixture, MixtureSampler
from .prefetch import CUDAPrefetcher
from .reader import MemmapReader
from .sampler import KeyedPermutation, WindowSampler
from .shards import ShardLister

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
    "Mixture",
    "MixtureSampler",
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
