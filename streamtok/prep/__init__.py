"""Data preparation, apart from the data path: tokenize text to shards, download shards, inspect them.

``streamtok tokenize`` (:mod:`.tokenize`; on Ray or as array tasks: :mod:`.units`,
:mod:`.ray_engine`, :mod:`.tasks`), ``streamtok download`` (:mod:`.hub`) and
``streamtok inspect`` (:mod:`.inspect`); the data path never imports this package, except
``ShardLister.from_hub``, which imports :func:`download_shards` when it first resolves.
"""

from .encoding import load_encoding
from .hub import download_shards, parse_spec, shard_names
from .inspect import scan_shard
from .sources import ReadOptions
from .tasks import finalize, tokenize_task
from .tokenize import TokenizeConfig, tokenize_files

__all__ = [
    "ReadOptions",
    "TokenizeConfig",
    "download_shards",
    "finalize",
    "load_encoding",
    "parse_spec",
    "scan_shard",
    "shard_names",
    "tokenize_files",
    "tokenize_task",
]
