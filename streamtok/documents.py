"""The document index: where each document of each shard starts, built once, memory-mapped.

A document starts at every boundary token (``bos_id``: GPT-2's ``<|endoftext|>`` written before
each document, Llama 3's ``<|begin_of_text|>``); Megatron shards carry their document starts in
their ``.idx``. For a token-delimited shard the index is one vectorised scan (``chunk ==
bos_id`` over 64 MiB pieces of the memory map: 0.5-1.7 s per GiB of uint16 tokens on a
shared 2-core machine, pages cached) and is then cached as a sidecar ``<shard>.docidx`` beside the shard, or under
``$STREAMTOK_CACHE_DIR`` (default ``~/.cache/streamtok/docidx``) when the shard's directory is
read-only. The sidecar is an ``.npy`` of int64: an 8-word key (magic, version, bos_id, file
size, mtime, a hash of three 64 KiB content samples, document count, 0) then the starts; a
key that does not match the shard means the shard changed, and the index is rebuilt. (Not
named ``*.npy``: a directory's ``*.npy`` files are read as shards.) A *portable* sidecar
(``streamtok tokenize`` writes these) holds -1 for the mtime and is keyed by size and content
samples alone: the same shard always gives the same sidecar bytes (its sha256 goes in the
tokenize manifest), and it stays valid when the dataset is copied or downloaded elsewhere.

Memory is O(documents): 8 bytes per document on disk, mapped, never copied whole.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._formats import MAGIC_GPT2, MAGIC_LLAMA3, ShardInfo, megatron_index_path, probe_shard, read_megatron_index
from .errors import ConfigError, ShardFormatError

SIDECAR_SUFFIX = ".docidx"
_MAGIC = 0x5354444F43494458  # "STDOCIDX"
_VERSION = 1
_KEY_WORDS = 8
_ANY_MTIME = -1  # the mtime word of a portable sidecar
_SAMPLE_BYTES = 1 << 16
_SCAN_TOKENS = 1 << 25  # tokens compared per numpy call (64 MiB of uint16)
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


def sample_spots(size: int) -> tuple[tuple[int, int], ...]:
    """The three ``[start, stop)`` byte ranges of a file of ``size`` bytes whose hash keys its index."""
    spots = (0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES))
    return tuple((a, min(size, a + _SAMPLE_BYTES)) for a in spots)


def sample_hash(parts: list[bytes]) -> int:
    """The key's content word from the bytes of :func:`sample_spots` (as an int64)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part)
    return int.from_bytes(h.digest(), "little") >> 1


def portable_sidecar_starts(arr: np.ndarray, *, bos_id: int | None, size: int, content: Callable[[], int]) -> np.ndarray | None:
    """The starts of a sidecar's array when it is a *portable* index of a shard of ``size``
    bytes with boundary ``bos_id`` whose content word is ``content()`` (asked last: it costs
    reads); ``None`` otherwise. This is how a copy of a shard elsewhere (an object store) checks
    the sidecar uploaded beside it."""
    if arr.dtype != np.int64 or arr.ndim != 1 or len(arr) < _KEY_WORDS:
        return None
    key = arr[:_KEY_WORDS]
    wanted = [_MAGIC, _VERSION, -1 if bos_id is None else bos_id, size]
    if [int(x) for x in key[:4]] != wanted or int(key[4]) != _ANY_MTIME or int(key[6]) != len(arr) - _KEY_WORDS:
        return None
    return arr[_KEY_WORDS:] if int(key[5]) == content() else None


def _content_key(path: str, info: ShardInfo, bos_id: int | None) -> np.ndarray:
    """What the index is valid for: the shard's size, mtime and three content samples (and
    a Megatron shard's ``.idx`` size and mtime)."""
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for at in (0, max(0, st.st_size // 2 - _SAMPLE_BYTES // 2), max(0, st.st_size - _SAMPLE_BYTES)):
            f.seek(at)
            h.update(f.read(_SAMPLE_BYTES))
    if info.kind == "megatron":  # the starts come from the .idx: a new .idx is a new index
        idx = os.stat(megatron_index_path(path))  # type: ignore[arg-type]
        h.update(f"{idx.st_size}:{idx.st_mtime_ns}".encode())
    sample = int.from_bytes(h.digest(), "little") >> 1  # fits an int64
    return np.array([_MAGIC, _VERSION, -1 if bos_id is None else bos_id, st.st_size, st.st_mtime_ns, sample, 0, 0], dtype=np.int64)


def scan_document_starts(path: str | os.PathLike, bos_id: int | None, *, raw_dtype: str = "uint16") -> np.ndarray:
    """Token offsets (int64, ascending) where the documents of one shard start.

    Args:
        path: the shard file.
        bos_id: the boundary token; ignored for Megatron shards (their ``.idx`` is read).
        raw_dtype: the dtype of headerless files.
    """
    path = os.fspath(path)
    info = probe_shard(path, raw_dtype=raw_dtype)
    if info.kind == "megatron":
        index = read_megatron_index(megatron_index_path(path))  # type: ignore[arg-type]
        seq_starts = np.concatenate(([0], np.cumsum(index.sequence_lengths, dtype=np.int64)))
        return seq_starts[np.asarray(index.document_indices[:-1])]
    if bos_id is None:
        bos_id = default_bos_id(info)
    tokens = np.memmap(path, dtype=info.dtype, mode="r", offset=info.offset, shape=(info.n_tokens,))
    if not 0 <= bos_id <= np.iinfo(info.dtype).max:
        return np.zeros(0, dtype=np.int64)  # no token of this dtype can be bos_id
    parts = [np.flatnonzero(tokens[a : a + _SCAN_TOKENS] == bos_id) + a for a in range(0, info.n_tokens, _SCAN_TOKENS)]
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


def _load_sidecar(candidate: Path, key: np.ndarray) -> np.ndarray | None:
    try:
        arr = np.load(candidate, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None  # absent, or not an index we wrote: rebuild
    if arr.dtype != np.int64 or arr.ndim != 1 or len(arr) < _KEY_WORDS:
        return None
    head = np.asarray(arr[:_KEY_WORDS])
    same = np.array_equal(head[:4], key[:4]) and head[5] == key[5] and head[4] in (key[4], _ANY_MTIME)
    if not same or int(head[6]) != len(arr) - _KEY_WORDS:
        return None
    return arr[_KEY_WORDS:]


def write_document_index(
    path: str | os.PathLike, *, bos_id: int | None = None, raw_dtype: str = "uint16", portable: bool = False
) -> Path:
    """Scan one shard and write its index sidecar atomically (for ``streamtok tokenize``).

    Args:
        path: the shard file.
        bos_id: the boundary token; default from the format (see :func:`default_bos_id`).
        raw_dtype: the dtype of headerless files.
        portable: key the sidecar by the shard's size and content samples, not its mtime, so
            equal shards get byte-equal sidecars that survive a copy (a Megatron shard's key
            still holds its ``.idx``'s mtime).

    Returns:
        The sidecar written: ``<shard>.docidx``, or one in :func:`cache_dir` when the shard's
        directory is not writable.
    """
    path = os.fspath(path)
    info = probe_shard(path, raw_dtype=raw_dtype)
    if bos_id is None and info.kind != "megatron":
        bos_id = default_bos_id(info)
    starts = scan_document_starts(path, bos_id, raw_dtype=raw_dtype)
    key = _content_key(path, info, None if info.kind == "megatron" else bos_id)
    key[6] = len(starts)
    if portable:
        key[4] = _ANY_MTIME
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
    key = _content_key(path, info, None if info.kind == "megatron" else bos_id)
    for candidate in sidecar_paths(path):
        found = _load_sidecar(candidate, key)
        if found is not None:
            return found
    try:
        written = write_document_index(path, bos_id=bos_id, raw_dtype=raw_dtype)
    except OSError:  # nowhere writable: use it uncached
        return scan_document_starts(path, bos_id, raw_dtype=raw_dtype)
    found = _load_sidecar(written, key)
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
