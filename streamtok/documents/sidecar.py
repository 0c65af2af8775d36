"""The document index: where each document of each shard starts, built once, memory-mapped.

A document starts at every boundary token (``bos_id``: GPT-2's ``<|endoftext|>`` written before
each document, Llama 3's ``<|begin_of_text|>``); Megatron shards carry their document starts in
their ``.idx``. For a token-delimited shard the index is one vectorised scan (``chunk ==
bos_id`` over 64 MiB reads of the file, not a map, so a shard truncated meanwhile is an error, not a SIGBUS: 0.5-1.7 s per GiB of uint16 tokens on a
shared 2-core machine, pages cached) and is then cached as a sidecar ``<shard>.docidx`` beside the shard, or under
``$STREAMTOK_CACHE_DIR`` (default ``~/.cache/streamtok/docidx``) when the shard's directory is
read-only. The sidecar is an ``.npy`` of int64: an 8-word key (magic, version, bos_id, file
size, -1, 63 bits of the sha256 of the *whole* shard file, document count, 63 bits of the
sha256 of the starts) then the starts. (Not named ``*.npy``: a directory's ``*.npy`` files are
read as shards.)

An index is used only for the bytes it was built from: its key must hold the sha256 of the
shard as it is now (a same-size edit anywhere, with or without its mtime kept, is a new
digest, and the index is rebuilt), and its starts must hash to the key's last word (an index
with a valid key and damaged starts is refused, naming it). The shard's digest is computed
once per version of the file and remembered under its inode, size, mtime and ctime
(:mod:`streamtok._digest`: a full read, about the cost of the scan, on the first use of a
shard, a ``stat`` after). The key holds no mtime or path, so the same shard always gives the
same sidecar bytes (``streamtok tokenize`` lists their sha256 in its manifest), and a copied
or downloaded dataset keeps its indexes (they are checked against the copy's bytes once).

Memory is O(documents): 8 bytes per document on disk, mapped, never copied whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .._digest import file_digest, file_sha256
from .._formats import MAGIC_GPT2, MAGIC_LLAMA3, ShardInfo, megatron_index_path, probe_shard, read_megatron_index
from .._shardfile import Stamp, stamp_of
from ..errors import ConfigError, ShardFormatError

SIDECAR_SUFFIX = ".docidx"
_MAGIC = 0x5354444F43494458  # "STDOCIDX"
_VERSION = 2  # 1: keyed by three 64 KiB samples and the mtime (stale after a same-size edit)
_KEY_WORDS = 8
_UNUSED = -1  # the key's fifth word (the mtime in version 1)
_SCAN_BYTES = 1 << 26  # bytes read and compared per numpy call (64 MiB)
GPT2_EOT = 50256
LLAMA3_BOS = 128000


def default_bos_id(info: ShardInfo) -> int | None:
    """The boundary token a shard's format implies (``None``: Megatron, whose ``.idx`` has them).

    Args:
        info: the probed shard.

    Raises:
        ConfigError: the format implies none (uint32 raw or ``.npy`` tokens): pass ``bos_id``.
    """
    if info.kind == "megatron":
        return None
    if info.kind == "llmc":
        return LLAMA3_BOS if info.version == 7 else GPT2_EOT
    if info.dtype == np.dtype(np.uint16):
        return GPT2_EOT
    raise ConfigError(
        f"{info.path}: {info.dtype.name} tokens without an llm.c header do not say which token "
        f"starts a document (llm.c uses {GPT2_EOT} for GPT-2 magic {MAGIC_GPT2}, {LLAMA3_BOS} "
        f"for Llama 3 magic {MAGIC_LLAMA3}); pass bos_id=..."
    )


def _digest63(hexdigest: str) -> int:
    return int(hexdigest[:16], 16) >> 1  # fits an int64


def _starts_digest(starts: np.ndarray) -> int:
    return _digest63(hashlib.sha256(np.ascontiguousarray(starts, dtype="<i8").tobytes()).hexdigest())


def _cache_or_none() -> Path | None:
    return cache_dir()


def _content_key(path: str, info: ShardInfo, bos_id: int | None) -> tuple[np.ndarray, Stamp]:
    """What the index is valid for: the shard's size and the sha256 of all its bytes (and of a
    Megatron shard's ``.idx``); the document count and the starts' digest are filled in later.
    Also returns the stamp of the shard version hashed."""
    digest, stamp = file_digest(path, _cache_or_none())
    if info.kind == "megatron":  # the starts come from the .idx: a new .idx is a new index
        digest = hashlib.sha256((digest + file_sha256(megatron_index_path(path), _cache_or_none())).encode()).hexdigest()  # type: ignore[arg-type]
    size = info.offset + info.nbytes
    key = np.array([_MAGIC, _VERSION, -1 if bos_id is None else bos_id, size, _UNUSED, _digest63(digest), 0, 0], dtype=np.int64)
    return key, stamp


def _token_blocks(path: str, info: ShardInfo, expect: Stamp | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(first token, tokens)`` of the shard in 64 MiB reads (read, not mapped: a file truncated
    meanwhile gives a short read and an error, not a SIGBUS), all of the version ``expect``."""
    size = info.dtype.itemsize
    step = _SCAN_BYTES // size
    with open(path, "rb", buffering=0) as f:
        before = stamp_of(os.fstat(f.fileno()))
        if expect is not None and before != expect:
            raise ShardFormatError(f"{path}: the file changed while its documents were indexed; is something writing it?")
        for a in range(0, info.n_tokens, step):
            n = min(step, info.n_tokens - a)
            data = os.pread(f.fileno(), n * size, info.offset + a * size)
            if len(data) != n * size:
                raise ShardFormatError(f"{path}: the file was truncated while its documents were indexed")
            yield a, np.frombuffer(data, dtype=info.dtype)
        if stamp_of(os.fstat(f.fileno())) != before:
            raise ShardFormatError(f"{path}: the file changed while its documents were indexed; is something writing it?")


def scan_document_starts(
    path: str | os.PathLike, bos_id: int | None, *, raw_dtype: str = "uint16", expect: Stamp | None = None
) -> np.ndarray:
    """Token offsets (int64, ascending) where the documents of one shard start.

    Args:
        path: the shard file.
        bos_id: the boundary token; ignored for Megatron shards (their ``.idx`` is read).
        raw_dtype: the dtype of headerless files.
        expect: the stamp (:mod:`streamtok._shardfile`) the file must have throughout the scan.
    """
    path = os.fspath(path)
    info = probe_shard(path, raw_dtype=raw_dtype)
    if info.kind == "megatron":
        index = read_megatron_index(megatron_index_path(path))  # type: ignore[arg-type]
        seq_starts = np.concatenate(([0], np.cumsum(index.sequence_lengths, dtype=np.int64)))
        return seq_starts[np.asarray(index.document_indices[:-1])]
    if bos_id is None:
        bos_id = default_bos_id(info)
    if not 0 <= bos_id <= np.iinfo(info.dtype).max:
        return np.zeros(0, dtype=np.int64)  # no token of this dtype can be bos_id
    parts = [np.flatnonzero(block == bos_id) + a for a, block in _token_blocks(path, info, expect)]
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, dtype=np.int64)


def cache_dir() -> Path:
    """Where indexes of shards in read-only directories go: ``$STREAMTOK_CACHE_DIR`` or ``~/.cache``."""
    root = os.environ.get("STREAMTOK_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "streamtok" / "docidx"


def sidecar_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The index's two possible homes: beside the shard, and in the cache directory."""
    path = Path(os.path.abspath(path))
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return path.with_name(path.name + SIDECAR_SUFFIX), cache_dir() / f"{path.name}.{tag}{SIDECAR_SUFFIX}"


def _load_sidecar(candidate: Path, key: np.ndarray, n_tokens: int) -> np.ndarray | None:
    """The starts in ``candidate`` if its key is ``key`` (else ``None``: absent or stale, rebuild).

    Raises:
        ShardFormatError: the key is current but the starts do not hash to it (a damaged index).
    """
    try:
        arr = np.load(candidate, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None  # absent, or not an index we wrote: rebuild
    if arr.dtype != np.int64 or arr.ndim != 1 or len(arr) < _KEY_WORDS:
        return None
    head = np.asarray(arr[:_KEY_WORDS])
    if not np.array_equal(head[:6], key[:6]):
        return None
    starts = arr[_KEY_WORDS:]
    if int(head[6]) != len(starts) or int(head[7]) != _starts_digest(starts):
        raise ShardFormatError(
            f"{candidate}: the document index of the current shard has {len(starts)} entries that do not "
            f"match its key (count {int(head[6])}, or their checksum differs): the index is damaged; delete it "
            "and it is rebuilt on next use"
        )
    if len(starts) and (int(starts[0]) < 0 or int(starts[-1]) >= n_tokens or (np.diff(starts) <= 0).any()):
        raise ShardFormatError(f"{candidate}: its document starts are not ascending within [0, {n_tokens}); delete it")
    return starts


def write_document_index(
    path: str | os.PathLike, *, bos_id: int | None = None, raw_dtype: str = "uint16", portable: bool = False
) -> Path:
    """Scan one shard and write its index sidecar atomically (for ``streamtok tokenize``).

    Args:
        path: the shard file.
        bos_id: the boundary token; default from the format (see :func:`default_bos_id`).
        raw_dtype: the dtype of headerless files.
        portable: kept for callers of version 1; every sidecar is now keyed by content alone
            (equal shards get byte-equal sidecars that survive a copy).

    Returns:
        The sidecar written: ``<shard>.docidx``, or one in :func:`cache_dir` when the shard's
        directory is not writable.
    """
    path = os.fspath(path)
    info = probe_shard(path, raw_dtype=raw_dtype)
    if bos_id is None and info.kind != "megatron":
        bos_id = default_bos_id(info)
    key, stamp = _content_key(path, info, None if info.kind == "megatron" else bos_id)
    starts = scan_document_starts(path, bos_id, raw_dtype=raw_dtype, expect=stamp)  # the bytes hashed
    key[6] = len(starts)
    key[7] = _starts_digest(starts)
    beside, cached = sidecar_paths(path)
    target = beside if os.access(beside.parent, os.W_OK) else cached
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as f:
        np.lib.format.write_array(f, np.concatenate((key, starts)), allow_pickle=False)
    return target


def document_starts(path: str | os.PathLike, *, bos_id: int | None = None, raw_dtype: str = "uint16") -> np.ndarray:
    """The document starts of one shard, from its sidecar when it is current, else built and cached.

    Args:
        path: the shard file.
        bos_id: the boundary token; default from the format.
        raw_dtype: the dtype of headerless files.
    """
    path = os.fspath(path)
    info = probe_shard(path, raw_dtype=raw_dtype)
    if bos_id is None and info.kind != "megatron":
        bos_id = default_bos_id(info)
    key, _ = _content_key(path, info, None if info.kind == "megatron" else bos_id)
    for candidate in sidecar_paths(path):
        found = _load_sidecar(candidate, key, info.n_tokens)
        if found is not None:
            return found
    try:
        written = write_document_index(path, bos_id=bos_id, raw_dtype=raw_dtype)
    except OSError:  # nowhere writable: use it uncached
        return scan_document_starts(path, bos_id, raw_dtype=raw_dtype)
    found = _load_sidecar(written, key, info.n_tokens)
    if found is None:
        raise ShardFormatError(f"{path}: its document index {written} was written but reads back wrong; is the shard changing?")
    return found


@dataclass(frozen=True)
class DocumentStats:
    """Documents of one shard and their lengths in tokens (a leading partial document counts)."""

    path: str
    n_documents: int
    median: float
    p90: float
    max: int


def document_stats(path: str | os.PathLike, *, bos_id: int | None = None, raw_dtype: str = "uint16") -> DocumentStats:
    """Documents per shard and the length distribution, for ``streamtok inspect``.

    Args:
        path: the shard file.
        bos_id: the boundary token; default from the format.
        raw_dtype: the dtype of headerless files.
    """
    path = os.fspath(path)
    info = probe_shard(path, raw_dtype=raw_dtype)
    return stats_of_starts(path, np.asarray(document_starts(path, bos_id=bos_id, raw_dtype=raw_dtype)), info.n_tokens)


def stats_of_starts(path: str, starts: np.ndarray, n_tokens: int) -> DocumentStats:
    """:class:`DocumentStats` of a shard of ``n_tokens`` tokens whose documents start at ``starts``."""
    info_n = n_tokens
    edges = np.unique(np.concatenate(([0], starts, [info_n])))
    lengths = np.diff(edges)
    if len(lengths) == 0:
        return DocumentStats(path, 0, 0.0, 0.0, 0)
    return DocumentStats(
        path, len(lengths), float(np.median(lengths)), float(np.percentile(lengths, 90)), int(lengths.max())
    )
