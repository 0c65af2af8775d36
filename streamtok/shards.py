"""ShardLister: which shard files make up a dataset, in order, and how they split.

A lister is a static description: a tuple of paths in natural sort order (``shard_2`` before
``shard_10``). ``split`` picks the training or validation files: shards named with ``val``
(``edu_fineweb_val_000000.bin``) form the validation split when a directory has them,
otherwise the last ``holdout`` shards are held out, as the fineweb-edu recipe does.
"""

from __future__ import annotations

import glob as globlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ._chain import Stage, provided
from ._formats import is_litdata_dir
from .errors import ConfigError, ShardFormatError, ShardNotFoundError
from .storage.urls import is_remote

SHARD_SUFFIXES = (".bin", ".npy")
SPLITS = ("train", "val", "all")
_VAL_NAME = re.compile(r"(^|[_\-.])(val|valid|validation)([_\-.]|$)")

Source = str | os.PathLike | Sequence[str | os.PathLike]


def natural_key(path: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``a_2`` before ``a_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _is_val_name(path: str) -> bool:
    return bool(_VAL_NAME.search(os.path.basename(path)))


def _list(source: Source, remote: Callable[[str], tuple[list[str], dict]] | None = None) -> tuple[str, ...]:
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if remote is not None and is_remote(text):
            return tuple(remote(text)[0])
        if os.path.isdir(text):
            if is_litdata_dir(text):
                raise ShardFormatError(
                    f"{text}: this directory is a LitData optimized dataset (index.json + "
                    "chunk-*.bin), not token shards; read it with litdata's StreamingDataset, "
                    "or tokenize the text into shards with `streamtok tokenize`"
                )
            names = [
                os.path.join(text, n)
                for n in os.listdir(text)
                if n.endswith(SHARD_SUFFIXES) and not n.startswith(".")
            ]
            if not names:
                raise ShardNotFoundError(
                    f"{text}: directory holds no shard files (*.bin or *.npy)"
                )
            return tuple(sorted(names, key=natural_key))
        if globlib.has_magic(text):
            names = [p for p in globlib.glob(text) if os.path.isfile(p)]
            if not names:
                raise ShardNotFoundError(f"{text}: no files match this pattern")
            return tuple(sorted(names, key=natural_key))
        if not os.path.lexists(text):
            raise ShardNotFoundError(f"{text}: no such file or directory")
        check_shard_path(text)
        return (text,)
    paths = tuple(os.fspath(p) for p in source)
    if not paths:
        raise ShardNotFoundError("an empty list of shard paths was given")
    for p in paths:
        if not is_remote(p):  # a remote object is checked when the reader opens it
            check_shard_path(p)
    return paths


def check_shard_path(path: str) -> None:
    """Refuse a path that cannot be a shard file before anything opens it.

    Raises:
        ShardFormatError: a directory, or a symlink that leads nowhere (dangling or a loop).
        ShardNotFoundError: nothing at ``path``.
    """
    if os.path.isfile(path):
        return
    if os.path.isdir(path):
        raise ShardFormatError(f"{path}: is a directory, not a shard file")
    if os.path.lexists(path):
        raise ShardFormatError(f"{path}: cannot be opened as a shard (a broken or looping symbolic link), not a shard file")
    raise ShardNotFoundError(f"{path}: no such shard file")


class ShardLister(Stage):
    """The shard files of a dataset: a directory, a glob, or an explicit list of paths.

    Chained forms: ``.memmap()`` (a :class:`~streamtok.MemmapReader`).

    Args:
        source: a directory (its ``*.bin`` and ``*.npy`` files), a glob pattern, one file,
            or a list of files (kept in the given order). Each may be a URL of an object
            store instead (``s3://``, ``gs://``, ``az://``, ``https://``, ``hf://``): a prefix
            ending in ``/`` is a directory, ``s3://b/p/*_train_*.bin`` a glob (see
            :mod:`streamtok.storage.listing`).
        resolver: called once, on first use, for the list of paths instead of listing
            ``source`` now (``source`` then only names the dataset); this is how
            :func:`streamtok.prep.hub.hub_lister` downloads shards only when they are read.
        storage_options: how to reach an object store (see :mod:`streamtok.storage.options`);
            the environment's (``AWS_*``...) when left out.

    Raises:
        ShardNotFoundError: nothing matches, or a listed path does not exist.
    """

    def __init__(
        self,
        source: Source,
        *,
        resolver: Callable[[], Sequence[str | os.PathLike]] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ):
        self.source = source
        self._resolver = resolver
        self.storage_options = storage_options
        # Objects a listing described (URL -> ObjectRef): the reader needs no HEAD for them.
        self.objects: dict[str, Any] = {}
        self._paths: tuple[str, ...] | None = None if resolver else self._list(source)

    def _list(self, source: Source) -> tuple[str, ...]:
        return _list(source, self._list_remote)

    def _list_remote(self, url: str) -> tuple[list[str], dict]:
        from .storage.listing import list_remote  # only remote sources pay for the import
        from .storage.store import RemoteStore

        found, known = list_remote(url, RemoteStore(self.storage_options), natural_key)
        self.objects.update(known)
        return found, known

    @classmethod
    def from_hub(cls, repo_id: str, shards: Any = None, **kw: Any) -> ShardLister:
        """Shards of a Hugging Face dataset repo, downloaded on first use.

        The download lives in the command-line tools (:func:`streamtok.prep.hub.hub_lister`),
        which the package offers here; the lister itself does not import them.

        Args:
            repo_id: e.g. ``karpathy/fineweb-edu-100B-gpt2-token-shards``.
            shards: which shards (``"1:3"``, a list of indices or file names); see
                ``streamtok download --help``.
            **kw: passed to :func:`streamtok.prep.hub.download_shards` (``local_dir``, ``val``...).
        """
        return provided("hub_lister")(repo_id, shards=shards, **kw)

    @property
    def paths(self) -> tuple[str, ...]:
        """The shard paths, in order (resolving, e.g. downloading, on first access)."""
        if self._paths is None:
            resolved = self._resolver() if self._resolver is not None else self.source
            self._paths = self._list([os.fspath(p) for p in resolved])
        return self._paths

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __repr__(self) -> str:
        return f"ShardLister({len(self.paths)} shards from {os.fspath(self.source) if isinstance(self.source, (str, os.PathLike)) else '[...]'})"

    def split(self, which: str = "train", holdout: int = 1) -> ShardLister:
        """The shards of one split.

        Args:
            which: ``"train"``, ``"val"`` or ``"all"``.
            holdout: how many trailing shards form ``"val"`` when no file is named ``val``.

        Raises:
            ConfigError: unknown split, or fewer than ``holdout + 1`` shards to split.
        """
        if which not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, not {which!r}")
        paths = self.paths
        if which == "all":
            return self._sub(paths)
        val_named = [p for p in paths if _is_val_name(p)]
        if val_named and len(val_named) < len(paths):
            chosen = val_named if which == "val" else [p for p in paths if not _is_val_name(p)]
            return self._sub(chosen)
        if holdout < 1:
            raise ConfigError(f"holdout must be at least 1 to make a {which!r} split, not {holdout}")
        if len(paths) < holdout + 1:
            raise ConfigError(
                f"{self.source!s}: {len(paths)} shard(s) cannot hold {holdout} out for validation "
                f"and keep one for training; need at least {holdout + 1} shards, "
                "or use split='all' (e.g. a separate validation directory)"
            )
        return self._sub(paths[-holdout:] if which == "val" else paths[:-holdout])

    def _sub(self, paths: Sequence[str]) -> ShardLister:
        sub = ShardLister(list(paths), storage_options=self.storage_options)
        sub.objects = dict(self.objects)
        return sub
