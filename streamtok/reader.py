"""MemmapReader: one virtual token array over many memory-mapped shard files.

Token ``i`` of the dataset is token ``i - offsets[k]`` of shard ``k``, where ``offsets`` is the
running sum of shard lengths. Windows that cross a shard boundary are stitched: they hold the
end of one shard followed by the start of the next, exactly as if the shards were one file
(shards hold whole documents separated by end-of-text tokens, so nothing is cut mid-document
that a single big file would not cut too).

Files are mapped lazily, in the process that reads them (DataLoader workers fork or spawn),
and never pickled; at most ``max_open`` maps are held per process, least recently used
closed first. A gather of ``B`` windows (or of a packed batch's pieces) costs one
``searchsorted``, one ``process_vm_readv`` of all of them out of the maps (:mod:`._vmread`;
``B`` ``pread`` calls where the kernel refuses it) and one ``fstat`` per shard touched. Neither
read is a plain copy out of a map, which kills the process with SIGBUS when the file shrinks:
a shard truncated or rewritten under the loader is an error naming it
(:mod:`streamtok._shardfile`), and the ``fstat`` after the reads keeps a rewrite's bytes out
of every batch.

Shards named by URL (``s3://``, ``gs://``, ``az://``, ``https://``, ``hf://``) are read from
their object store instead (:mod:`streamtok.storage`): the reader's arithmetic is the same,
and it asks the storage layer for the byte ranges of each batch, ``lookahead`` steps ahead.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import mmap
import os
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _vmread as vmread
from ._chain import Stage, chained
from ._formats import ShardInfo, probe_shard
from ._pagehints import PageHints
from ._shardfile import ShardFile, take_stamp
from .errors import ConfigError, ShardFormatError
from .shards import ShardLister, Source
from .storage import urls as storage_urls

ADVICE = {
    None: None,
    "normal": getattr(mmap, "MADV_NORMAL", None),
    "random": getattr(mmap, "MADV_RANDOM", None),
    "sequential": getattr(mmap, "MADV_SEQUENTIAL", None),
}


def _default_max_open() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 64
    # Two descriptors per open shard (the file read with pread, and its map): half the limit.
    return 4096 if soft == resource.RLIM_INFINITY else max(64, soft // 4)


FINGERPRINT_BYTES = 4096


def _content_sample(info: ShardInfo) -> bytes:
    """The first and last ``FINGERPRINT_BYTES`` of a shard's token bytes."""
    n = min(FINGERPRINT_BYTES, info.nbytes)
    try:
        with open(info.path, "rb") as f:
            head = os.pread(f.fileno(), n, info.offset)
            tail = os.pread(f.fileno(), n, info.offset + info.nbytes - n)
    except OSError as exc:
        raise ShardFormatError(f"{info.path}: cannot be read ({exc.strerror})") from None
    if len(head) != n or len(tail) != n:
        raise ShardFormatError(f"{info.path}: the file is shorter than when the reader opened it; rebuild the loader")
    return head + tail


class MemmapReader(Stage):
    """A read-only view of all tokens of a list of shards, as one array.

    Chained forms: ``.windows(T)`` (a :class:`~streamtok.WindowSampler`).

    Args:
        source: a :class:`ShardLister`, or anything ``ShardLister`` accepts.
        raw_dtype: dtype of headerless ``.bin`` files.
        max_open: most shards held open at once in one process (each holds two file
            descriptors: the file and its map); default: every shard, up to a quarter of the
            process's descriptor limit, so random windows over 1000 shards do not re-open a
            file per window.
        advice: ``madvise`` hint for every map: ``"random"``, ``"sequential"``, ``"normal"``
            or ``None`` (leave the kernel's default).
        lookahead: batches whose pages are requested (``MADV_WILLNEED``) before they are
            read (for remote shards: whose byte ranges are fetched); 0 turns it off.
        storage_options: how to reach the object store of remote shards (endpoint,
            region, credentials, ``anonymous``, ``allow_http``...; see
            :mod:`streamtok.storage.options`); default: the lister's, then the environment.
        fetch: how remote shards are read: ``"windows"`` (the exact byte ranges of each
            batch, fetched ahead, no local disk) or ``"blocks"`` (fixed-size blocks in a
            bounded local cache).
        cache_dir, cache_limit: the ``"blocks"`` cache's directory and size limit in bytes.

    Raises:
        ShardFormatError: a shard is empty, truncated, has a bad header, or the shards mix
            dtypes that no integer dtype holds.
        ConfigError: bad settings.
    """

    def __init__(
        self,
        source: ShardLister | Source,
        *,
        raw_dtype: str | np.dtype = "uint16",
        max_open: int | None = None,
        advice: str | None = None,
        lookahead: int = 0,
        storage_options: Any = None,
        fetch: str = "windows",
        cache_dir: str | os.PathLike | None = None,
        cache_limit: int | None = None,
    ):
        lister = source if isinstance(source, ShardLister) else ShardLister(source, storage_options=storage_options)
        if max_open is None:
            max_open = min(len(lister.paths), _default_max_open())
        if max_open < 1:
            raise ConfigError(f"max_open must be at least 1, not {max_open}")
        if advice not in ADVICE:
            raise ConfigError(f"advice must be one of {sorted(k for k in ADVICE if k)} or None, not {advice!r}")
        self.lister = lister
        self._remote = _open_remote(lister, raw_dtype, storage_options, fetch, cache_dir, cache_limit)
        self.infos: tuple[ShardInfo, ...] = (
            self._remote.infos if self._remote is not None else tuple(probe_shard(p, raw_dtype=raw_dtype) for p in lister.paths)
        )
        self.raw_dtype = np.dtype(raw_dtype)
        self.max_open = max_open
        self.advice = advice
        if lookahead < 0:
            raise ConfigError(f"lookahead must be >= 0, not {lookahead}")
        self.lookahead = lookahead
        lengths = np.array([i.n_tokens for i in self.infos], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._ends = self.offsets[1:]
        self.offset_list: list[int] = self.offsets.tolist()  # the same, as Python ints (faster per item)
        self.n_tokens = int(self.offsets[-1])
        self.dtype = np.result_type(*[i.dtype for i in self.infos])
        if self.dtype.kind not in "iu":
            raise ShardFormatError(
                "shards mix dtypes that no integer dtype holds: "
                + ", ".join(f"{os.path.basename(i.path)}={i.dtype}" for i in self.infos)
            )
        self._maps: OrderedDict[int, ShardFile] = OrderedDict()
        self._map_shift = np.zeros(len(self.infos), dtype=np.int64)  # per shard, set when its map opens
        self._pid = os.getpid()
        self._hints = PageHints()
        # What each file must stay (inode, size, mtime, ctime): a worker or a later pass that
        # opens a file replaced or rewritten since is refused, as a rewrite during a pass is.
        remote = self._remote.is_remote if self._remote is not None else (lambda k: False)
        self._stamps = tuple(None if remote(k) else take_stamp(i) for k, i in enumerate(self.infos))
        self._uniform = all(i.dtype == self.dtype for i in self.infos)  # pread straight into out's bytes

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(i.path for i in self.infos)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of what the data is, not where it lies: names, lengths, dtypes and content.

        The content is sampled, not read: the first and last ``FINGERPRINT_BYTES`` of each
        shard's tokens (two small reads per shard, once), so another dataset with the same
        file names and sizes is told apart, and a moved directory still matches.
        """
        h = hashlib.sha256(self.legacy_fingerprint.encode())
        samples = self._remote.samples if self._remote is not None else {}
        for k, info in enumerate(self.infos):
            h.update(samples[k] if k in samples else _content_sample(info))
        return h.hexdigest()[:16]

    @functools.cached_property
    def legacy_fingerprint(self) -> str:
        """The fingerprint of streamtok 0.1 states: file names, lengths and dtypes only."""
        h = hashlib.sha256()
        for i in self.infos:
            h.update(f"{os.path.basename(i.path)}:{i.n_tokens}:{i.dtype.str};".encode())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        """Short text naming the shards, for error messages."""
        names = [os.path.basename(p) for p in self.paths]
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} shards)" if len(names) > 3 else "")
        return f"{storage_urls.dirname(self.paths[0]) or '.'}/[{shown}]"

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return f"MemmapReader({len(self.infos)} shards, {self.n_tokens:,} tokens of {self.dtype})"

    def __getitem__(self, index: int | slice) -> np.ndarray | int:
        """Tokens by global position: ``reader[i]`` or ``reader[a:b]`` (a copy, stitched)."""
        if isinstance(index, slice):
            start, stop, step = index.indices(self.n_tokens)
            if step != 1:
                raise IndexError("MemmapReader slices take no step")
            return self.read(start, max(start, stop))
        i = index + self.n_tokens if index < 0 else index
        if not 0 <= i < self.n_tokens:
            raise IndexError(f"token {index} is outside [0, {self.n_tokens})")
        return int(self.read(i, i + 1)[0])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"], state["_map_shift"] = OrderedDict(), np.zeros(len(self.infos), dtype=np.int64)
        return state

    def shard_array(self, k: int) -> np.ndarray:
        """The tokens of shard ``k`` as a read-only array backed by its memory map (for a
        remote shard: an array-like whose slices are ranged reads).

        Unchecked: reading it while the file is truncated kills the process with SIGBUS, and
        a rewrite's bytes show through. The data path reads with :meth:`gather`, which does neither.
        """
        if self._remote is not None and self._remote.is_remote(k):
            return self._remote.array(k)  # type: ignore[return-value]
        return self._entry(k).arr

    def checked_array(self, k: int) -> np.ndarray:
        """:meth:`shard_array`, after checking that the file is still the one the reader opened.

        One ``fstat`` (~1 µs): its inode, size, mtime and ctime must be those seen when the
        reader was built, else :class:`ShardFormatError` names the file. A copy made from the
        array after the check is not covered (use :meth:`gather` or :meth:`read_files`).
        A remote shard's reads check its ETag and size instead (:mod:`streamtok.storage.store`).
        """
        if self._remote is not None and self._remote.is_remote(k):
            return self._remote.array(k)  # type: ignore[return-value]
        entry = self._entry(k)
        entry.check()
        return entry.arr

    def _entry(self, k: int) -> ShardFile:
        if self._pid != os.getpid():  # a forked child must not share the parent's LRU
            self._maps = OrderedDict()
            self._pid = os.getpid()
        entry = self._maps.get(k)
        if entry is not None:
            self._maps.move_to_end(k)
            return entry
        self._maps[k] = entry = ShardFile(self.infos[k], self._stamps[k], ADVICE[self.advice])
        # Address of global token 0 were shard k's map the whole array: src = start * size + this.
        self._map_shift[k] = entry.addr - self.offset_list[k] * entry.info.dtype.itemsize
        if len(self._maps) > self.max_open:
            # The evicted file and map close once no array made from it is alive.
            self._maps.popitem(last=False)
        return entry

    def mapping(self, k: int) -> mmap.mmap:
        """The memory map of shard ``k`` (opened if needed), e.g. for ``madvise``."""
        return self._entry(k).mm

    def locate(self, starts: np.ndarray) -> np.ndarray:
        """Index of the shard that holds each global token position."""
        return np.searchsorted(self._ends, starts, side="right")

    @functools.cached_property
    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per shard: token count, byte offset of its first token, bytes per token."""
        return (
            np.array([i.n_tokens for i in self.infos], dtype=np.int64),
            np.array([i.offset for i in self.infos], dtype=np.int64),
            np.array([i.dtype.itemsize for i in self.infos], dtype=np.int64),
        )

    def file_positions(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where global token positions lie on disk: ``(shard, token in shard, byte in file)``."""
        starts = np.asarray(starts, dtype=np.int64)
        k = self.locate(starts)
        lo = starts - self.offsets[k]
        _, base, itemsize = self.layout
        return k, lo, base[k] + lo * itemsize[k]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the virtual array, as a new array (stitched across shards)."""
        if not 0 <= start <= stop <= self.n_tokens:
            raise IndexError(f"token range [{start}, {stop}) is outside [0, {self.n_tokens})")
        out = np.empty(stop - start, dtype=self.dtype)
        if stop > start:
            self.gather(np.array([start], dtype=np.int64), stop - start, out[None, :])
        return out

    def gather(self, starts: np.ndarray, length: int, out: np.ndarray) -> np.ndarray:
        """Copy ``tokens[s:s+length]`` for each ``s`` in ``starts`` into the rows of ``out``.

        ``out`` has shape ``(len(starts), length)`` and any dtype that holds the tokens; the
        copy converts. Callers keep every start within ``[0, n_tokens - length]``.

        Raises:
            ShardFormatError: a shard read changed since the reader was built (checked after
                the reads: ``out`` then holds bytes that must not be used).
        """
        if self._remote is not None:
            return self._remote.gather(self, starts, length, out)
        starts = np.asarray(starts, dtype=np.int64)
        touched: dict[int, ShardFile] = {}
        if self._uniform and out.dtype == self.dtype and out.flags.c_contiguous and out.size:
            self._read_direct(starts, np.full(len(starts), length, dtype=np.int64), out.reshape(-1), touched)
        elif out.flags.c_contiguous:
            self._read(starts, itertools.repeat(length), out.reshape(-1), touched)
        else:
            for i in range(len(starts)):
                self._read(starts[i : i + 1], (length,), out[i], touched)
        for entry in touched.values():
            entry.check()
        return out

    def read_pieces(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Copy ``tokens[s:s+n]`` for each ``(s, n)``, one after another, into the 1-D ``out``.

        ``out`` holds ``sum(lengths)`` tokens (any dtype that holds them). Pieces may run
        across shard ends (stitched). Each shard touched is checked after all reads.

        Raises:
            ShardFormatError: a shard changed since the reader was built.
        """
        if self._remote is not None:  # object storage: every piece in one concurrent fetch
            np.concatenate(self._remote.read_spans(self, starts, lengths, out.dtype), out=out)
            return out
        return self.read_files(starts, lengths, out)

    def read_files(self, starts: np.ndarray, lengths: Any, out: np.ndarray) -> np.ndarray:
        """:meth:`read_pieces` of local shards only (the storage layer's reads of the local
        shards of a loader that mixes local and remote ones): ``pread``, each shard checked after."""
        touched: dict[int, ShardFile] = {}
        starts = np.asarray(starts, dtype=np.int64)
        if self._uniform and out.dtype == self.dtype and out.flags.c_contiguous and len(out):
            self._read_direct(starts, np.asarray(lengths, dtype=np.int64), out, touched)
        else:
            self._read(starts, np.asarray(lengths).tolist(), out, touched)
        for entry in touched.values():
            entry.check()
        return out

    def _read_direct(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray, touched: dict[int, ShardFile]) -> None:
        # All pieces in one process_vm_readv out of the shards' maps where the kernel allows it
        # (streamtok._vmread: a truncated file gives a short count, not SIGBUS), else one pread
        # each, their file offsets and byte ranges computed at once so that the loop is little
        # else. Pieces that run past a shard's end, and a short read (a truncated file:
        # read_into then raises), go through _read.
        k = self.locate(starts)
        if len(self.infos) > 1 and bool((starts + lengths > self._ends[k]).any()):
            self._read(starts, lengths.tolist(), out, touched)
            return
        size = self.dtype.itemsize
        shards = k.tolist()
        entries = {j: self._touch(j, touched) for j in set(shards)}
        nbytes = lengths * size
        ends_np = np.cumsum(nbytes)
        lo = 0
        if vmread.usable():
            lo = self._copy_mapped(starts, k, nbytes, ends_np, out)
            if lo == int(ends_np[-1]):
                return
            # Short (a truncated shard) or refused here: pread from the piece it stopped in.
            i = int(np.searchsorted(ends_np, lo, side="right"))
            lo = int(ends_np[i - 1]) if i else 0
            k, starts, lengths, ends_np, shards = k[i:], starts[i:], lengths[i:], ends_np[i:], shards[i:]
        where = (starts * size + self._file_shift[k]).tolist()
        ends = ends_np.tolist()
        mv = memoryview(out).cast("B")
        preadv = os.preadv
        for j, at, hi in zip(shards, where, ends):
            if preadv(entries[j].fd, [mv[lo:hi]], at) != hi - lo:
                break
            lo = hi
        else:
            return
        i = int(np.searchsorted(ends, lo, side="right"))  # the piece that read short, and the rest
        self._read(starts[i:], lengths[i:].tolist(), out[lo // size :], touched)

    def _copy_mapped(self, starts: np.ndarray, k: np.ndarray, nbytes: np.ndarray, ends: np.ndarray, out: np.ndarray) -> int:
        """Bytes of ``out`` filled from its start by one :func:`streamtok._vmread.copy_spans` of the pieces."""
        size = self.dtype.itemsize
        src = starts * size + self._map_shift[k]  # every shard in k was just opened (entries) in this process
        return max(0, vmread.copy_spans(ends - nbytes + out.ctypes.data, src, nbytes))

    @functools.cached_property
    def _file_shift(self) -> np.ndarray:
        """Per shard: file byte of global token ``s`` is ``s * itemsize + shift`` (uniform dtypes)."""
        _, base, itemsize = self.layout
        return base - self.offsets[:-1] * itemsize

    def _touch(self, k: int, touched: dict[int, ShardFile]) -> ShardFile:
        entry = touched.get(k)
        if entry is None:
            entry = touched[k] = self._entry(k)
        return entry

    def _read(self, starts: np.ndarray, lengths: Iterable[int], out: np.ndarray, touched: dict[int, ShardFile]) -> None:
        # One pread per piece of a shard, straight into out's bytes when the dtypes agree.
        offs = self.offset_list
        shard_ids = itertools.repeat(0) if len(self.infos) == 1 else self.locate(starts).tolist()
        direct = self._uniform and out.dtype == self.dtype and out.flags.c_contiguous
        mv = memoryview(out).cast("B") if direct and len(out) else None
        size = self.dtype.itemsize
        pos = 0
        for s, n, k in zip(starts.tolist(), lengths, shard_ids):
            while n > 0:  # more than one turn: stitched across shard ends
                entry = touched.get(k)
                if entry is None:
                    entry = touched[k] = self._entry(k)
                take = min(n, offs[k + 1] - s)
                at = pos * size
                if mv is None or os.preadv(entry.fd, [mv[at : at + take * size]], entry.info.offset + (s - offs[k]) * size) != take * size:
                    entry.read_into(s - offs[k], out[pos : pos + take])  # converts, or finishes a short read
                pos, s, n, k = pos + take, s + take, n - take, k + 1

    def willneed(self, starts: np.ndarray, length: int) -> None:
        """Ask the kernel to read the pages of these windows ahead of use (see :mod:`streamtok._pagehints`);
        for remote shards, start fetching their bytes (see :mod:`streamtok.storage.windows`).

        ``starts`` is a step's plan: window starts, or ``(row, start, length)`` spans (a plan of
        pieces, as packed rows are made of), whose ``length`` column replaces ``length``.
        """
        if self._remote is not None:
            if starts.ndim == 2:
                self._remote.willneed_spans(self, starts[:, 1], starts[:, 2])
            else:
                self._remote.willneed(self, starts, length)
            return
        if starts.ndim == 1:  # spans: no page hints (the loader sets lookahead 0 for them locally)
            self._hints.willneed(self, starts, length)

    @property
    def remote(self) -> Any:
        """The storage side of remote shards (:class:`streamtok.storage.RemoteShards`), or ``None``."""
        return self._remote


def _open_remote(lister: ShardLister, raw_dtype: Any, storage_options: Any, fetch: str,
                 cache_dir: Any, cache_limit: int | None) -> Any:
    """A :class:`streamtok.storage.RemoteShards` when some shard is a URL, else ``None`` (and
    the strategy options must be left at their defaults)."""
    if not any(storage_urls.is_remote(p) for p in lister.paths):
        if fetch != "windows" or cache_dir is not None or cache_limit is not None:
            from .storage.remote import FETCH_STRATEGIES

            if fetch not in FETCH_STRATEGIES:
                raise ConfigError(f"fetch must be one of {FETCH_STRATEGIES}, not {fetch!r}")
        return None
    from .storage import RemoteShards, StorageOptions
    from .storage.options import as_options

    options: StorageOptions = as_options(storage_options if storage_options is not None else lister.storage_options)
    return RemoteShards(lister.paths, lister.objects, options, raw_dtype=np.dtype(raw_dtype), fetch=fetch,
                        cache_dir=None if cache_dir is None else os.fspath(cache_dir), cache_limit=cache_limit)


@chained(ShardLister)
def memmap(self: ShardLister, **kw: Any) -> MemmapReader:
    """A :class:`MemmapReader` over these shards (keywords as for ``MemmapReader``)."""
    return MemmapReader(self, **kw)
