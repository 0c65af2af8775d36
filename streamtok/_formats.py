"""Shard file formats: detect, validate and write them.

Three layouts are read, all as one flat array of token ids at a byte offset:

- llm.c ``.bin``: a 1024-byte header of 256 int32 (magic, version, token count), then the
  tokens. Magic 20240520 / version 1 holds uint16 ids (GPT-2); magic 20240801 / version 7
  holds uint32 ids (Llama 3).
- ``.npy``: numpy's header is parsed and the data offset taken from it; any 1-D integer dtype.
- Megatron ``.bin``: headerless tokens with a sibling ``.idx`` (``MMIDIDX`` index: version,
  dtype code, sequence lengths, byte pointers, document index); dtype and size come from it.
- anything else (raw ``.bin``): a headerless array of a configured dtype (uint16 by default).

Opening costs one ``stat`` and at most one small header read; nothing is scanned.
Writers write to a temporary name in the same directory and ``os.replace`` it into place, so
a crash never leaves a half-written shard under the final name.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._atomic import atomic_write
from .errors import ConfigError, ShardFormatError, ShardNotFoundError

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
# Other llm.c files start with an int32 magic too; read as raw tokens they would be garbage.
LLMC_OTHER_FILES = {
    20240326: "an llm.c model checkpoint (e.g. gpt2_124M.bin)",
    20240327: "an llm.c debug-state file (e.g. gpt2_124M_debug_state.bin)",
    20240328: "an llm.c tokenizer file (e.g. gpt2_tokenizer.bin)",
    20240522: "an llm.c eval file (e.g. hellaswag_val.bin: multiple-choice examples, not a token stream)",
    20240527: "an llm.c training-state checkpoint (e.g. state_00005000_00000.bin)",
}
MAGIC_GPT2 = 20240520
MAGIC_LLAMA3 = 20240801
# magic -> (version, token dtype), as llm.c writes them.
LLMC_FORMATS: dict[int, tuple[int, np.dtype]] = {
    MAGIC_GPT2: (1, np.dtype(np.uint16)),
    MAGIC_LLAMA3: (7, np.dtype(np.uint32)),
}
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
# Megatron-LM's DType codes (megatron/core/datasets/indexed_dataset.py); the integer ones.
MEGATRON_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    8: np.dtype(np.uint16),
}


@dataclass(frozen=True)
class ShardInfo:
    """Where the tokens of one shard file lie: ``n_tokens`` ids of ``dtype`` from byte ``offset``."""

    path: str
    kind: str  # "llmc", "npy", "megatron" or "raw"
    dtype: np.dtype
    offset: int
    n_tokens: int
    version: int | None = None

    @property
    def nbytes(self) -> int:
        return self.n_tokens * self.dtype.itemsize


def probe_shard(path: str | os.PathLike, *, raw_dtype: str | np.dtype = "uint16") -> ShardInfo:
    """Detect the format of ``path`` and check that its size agrees with its header.

    Args:
        path: the shard file.
        raw_dtype: the dtype of headerless files (ignored for llm.c ``.bin`` and ``.npy``).

    Raises:
        ShardNotFoundError: the file does not exist.
        ShardFormatError: the file is empty, truncated, or its header is not understood.
    """
    path = str(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise ShardNotFoundError(f"{path}: no such shard file") from None
    except OSError as exc:  # a symlink loop, no permission...
        raise ShardFormatError(f"{path}: cannot be opened as a shard ({exc.strerror})") from None
    if os.path.isdir(path):
        raise ShardFormatError(f"{path}: is a directory, not a shard file")
    if size == 0:
        raise ShardFormatError(f"{path}: the shard is empty (0 bytes); delete it or re-create it")
    if path.endswith(".npy"):
        return _probe_npy(path, size)
    if is_litdata_dir(os.path.dirname(path) or "."):
        raise ShardFormatError(
            f"{path}: this file is a chunk of a LitData optimized dataset (its directory has "
            "index.json and chunk-*.bin), not a token shard; read it with litdata's "
            "StreamingDataset, or tokenize the text into shards with `streamtok tokenize`"
        )
    index = megatron_index_path(path)
    if index is not None:
        return _probe_megatron(path, size, index)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) >= 4:
        magic = int(np.frombuffer(head[:4], dtype="<i4")[0])
        if magic in LLMC_FORMATS:
            return llmc_info(path, size, head)
        if magic in LLMC_OTHER_FILES:
            raise ShardFormatError(
                f"{path}: starts with llm.c magic {magic}: it is {LLMC_OTHER_FILES[magic]}, "
                f"not a token shard (llm.c token shards have magic {MAGIC_GPT2} or {MAGIC_LLAMA3})"
            )
    _check_not_orphan(path)
    return raw_info(path, size, np.dtype(raw_dtype))


def is_litdata_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a LitData optimized dataset (``index.json`` + ``chunk-*.bin``)."""
    directory = os.fspath(directory)
    if not os.path.isfile(os.path.join(directory, "index.json")):
        return False
    try:
        return any(n.startswith("chunk-") and n.endswith(".bin") for n in os.listdir(directory))
    except OSError:
        return False


def megatron_index_path(path: str) -> str | None:
    """The sibling ``.idx`` of a ``.bin`` shard (``None`` when there is none)."""
    if not path.endswith(".bin"):
        return None
    index = path[: -len(".bin")] + ".idx"
    return index if os.path.isfile(index) else None


def _check_not_orphan(path: str) -> None:
    """A headerless ``.bin`` beside Megatron pairs is a pair whose ``.idx`` is missing."""
    directory = os.path.dirname(path) or "."
    if not path.endswith(".bin"):
        return
    try:
        pairs = _megatron_pairs(directory, os.stat(directory).st_mtime_ns)
    except OSError:
        return
    if pairs:
        raise ShardFormatError(
            f"{path}: a headerless .bin beside Megatron .bin/.idx pairs (e.g. {pairs[0]}) but its own "
            f"{os.path.basename(path)[:-4]}.idx is missing; copy the .idx next to it or remove the .bin"
        )


@dataclass(frozen=True)
class MegatronIndex:
    """The parsed ``MMIDIDX`` index of one Megatron shard (arrays are views of a memory map)."""

    path: str
    dtype: np.dtype
    sequence_lengths: np.ndarray  # int32, tokens per sequence
    sequence_pointers: np.ndarray  # int64, byte offset of each sequence in the .bin
    document_indices: np.ndarray  # int64, sequence index where each document starts, then the count


def read_megatron_index(index: str) -> MegatronIndex:
    """Parse a Megatron ``.idx`` (layout of Megatron-LM's ``indexed_dataset.py``).

    Args:
        index: the ``.idx`` file.

    Raises:
        ShardFormatError: a bad magic, version or dtype code, or an index shorter than it says.
    """
    size = os.stat(index).st_size
    with open(index, "rb") as f:
        head = f.read(_MEGATRON_FIXED)
    return parse_megatron_index(index, head, size, lambda: np.memmap(index, dtype=np.uint8, mode="r"))


_MEGATRON_FIXED = len(MEGATRON_MAGIC) + 8 + 1 + 8 + 8


def parse_megatron_index(index: str, head: bytes, size: int, body: Callable[[], np.ndarray]) -> MegatronIndex:
    """Parse a Megatron index from its first bytes ``head``, its ``size`` and ``body()``, all of
    its bytes as a uint8 array (a memory map locally, downloaded bytes for an object store).

    Raises:
        ShardFormatError: as :func:`read_megatron_index`.
    """
    fixed = _MEGATRON_FIXED
    if len(head) < fixed or head[: len(MEGATRON_MAGIC)] != MEGATRON_MAGIC:
        raise ShardFormatError(f"{index}: not a Megatron MMIDIDX index (bad magic or shorter than its header)")
    pos = len(MEGATRON_MAGIC)
    version = int.from_bytes(head[pos : pos + 8], "little")
    code = head[pos + 8]
    n_seq = int.from_bytes(head[pos + 9 : pos + 17], "little")
    n_doc = int.from_bytes(head[pos + 17 : pos + 25], "little")
    if version != 1:
        raise ShardFormatError(f"{index}: Megatron index version {version} is not supported (expected 1)")
    if code not in MEGATRON_DTYPES:
        raise ShardFormatError(
            f"{index}: Megatron dtype code {code} is not an integer token dtype "
            f"(known: {', '.join(f'{c}={d.name}' for c, d in MEGATRON_DTYPES.items())})"
        )
    need = fixed + n_seq * (4 + 8) + n_doc * 8
    if n_doc < 1 or size < need:
        raise ShardFormatError(
            f"{index}: Megatron index says {n_seq} sequences and {n_doc} document entries "
            f"({need} bytes) but has {size} bytes; the index is truncated or corrupt"
        )
    mm = body()
    lengths = mm[fixed : fixed + 4 * n_seq].view("<i4")
    pointers = mm[fixed + 4 * n_seq : fixed + 12 * n_seq].view("<i8")
    documents = mm[fixed + 12 * n_seq : fixed + 12 * n_seq + 8 * n_doc].view("<i8")
    return MegatronIndex(index, MEGATRON_DTYPES[code], lengths, pointers, documents)


def _probe_megatron(path: str, size: int, index_path: str) -> ShardInfo:
    return megatron_info(path, size, read_megatron_index(index_path))


def megatron_info(path: str, size: int, index: MegatronIndex) -> ShardInfo:
    """The :class:`ShardInfo` of a Megatron ``.bin`` of ``size`` bytes, checked against its parsed index."""
    index_path = index.path
    itemsize = index.dtype.itemsize
    lengths, pointers, docs = index.sequence_lengths, index.sequence_pointers, index.document_indices
    n_tokens = int(lengths.sum(dtype=np.int64))
    expected = np.concatenate(([0], np.cumsum(lengths[:-1], dtype=np.int64) * itemsize)) if len(lengths) else lengths
    problem = None
    if size != n_tokens * itemsize:
        problem = f"its sequences hold {n_tokens} tokens of {index.dtype.name} ({n_tokens * itemsize} bytes) but the .bin has {size} bytes"
    elif (lengths < 0).any() or not np.array_equal(pointers, expected):
        problem = "its sequence pointers do not follow the sequence lengths (sequences must lie back to back)"
    elif int(docs[0]) != 0 or int(docs[-1]) != len(lengths) or (np.diff(docs) < 0).any():
        problem = f"its document index must rise from 0 to the sequence count {len(lengths)}"
    if problem:
        raise ShardFormatError(f"{path}: inconsistent Megatron index {index_path}: {problem}; re-create the pair")
    return ShardInfo(path, "megatron", index.dtype, 0, n_tokens, 1)


@functools.lru_cache(maxsize=64)
def _megatron_pairs(directory: str, mtime_ns: int) -> list[str]:
    """The ``.idx`` files with a ``.bin`` beside them (cached per directory state: one listing
    for a directory of 1000 raw shards, not one per shard)."""
    names = set(os.listdir(directory))
    return sorted(n for n in names if n.endswith(".idx") and n[:-4] + ".bin" in names)


def llmc_info(path: str, size: int, head: bytes) -> ShardInfo:
    """The :class:`ShardInfo` of an llm.c shard of ``size`` bytes whose first bytes are ``head``."""
    if len(head) < HEADER_BYTES:
        raise ShardFormatError(
            f"{path}: llm.c magic found but the file has only {size} bytes, "
            f"less than the {HEADER_BYTES}-byte header; the shard is truncated"
        )
    header = np.frombuffer(head, dtype="<i4")
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    want_version, dtype = LLMC_FORMATS[magic]
    if version != want_version:
        raise ShardFormatError(
            f"{path}: llm.c header magic {magic} with unknown version {version} "
            f"(expected {want_version}); re-create the shard or convert it"
        )
    expected = HEADER_BYTES + count * dtype.itemsize
    if count <= 0 or size != expected:
        raise ShardFormatError(
            f"{path}: llm.c header says {count} tokens of {dtype.name} "
            f"({expected} bytes with the header) but the file has {size} bytes; "
            "the shard is truncated or its header is wrong; re-download or re-create it"
        )
    return ShardInfo(path, "llmc", dtype, HEADER_BYTES, count, version)


def _probe_npy(path: str, size: int) -> ShardInfo:
    with open(path, "rb") as f:
        return parse_npy_header(path, size, f)


def parse_npy_header(path: str, size: int, f: BinaryIO) -> ShardInfo:
    """The :class:`ShardInfo` of a ``.npy`` shard of ``size`` bytes whose header ``f`` reads."""
    try:
        major, _minor = np.lib.format.read_magic(f)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    except ValueError as exc:
        raise ShardFormatError(f"{path}: not a readable .npy file ({exc})") from None
    if len(shape) != 1 or dtype.kind not in "iu" or dtype.hasobject:
        raise ShardFormatError(
            f"{path}: .npy holds an array of shape {shape} and dtype {dtype}; "
            "a token shard must be 1-D with an integer dtype"
        )
    if not dtype.isnative and dtype.itemsize > 1:
        raise ShardFormatError(f"{path}: .npy dtype {dtype.str} is not in this machine's byte order")
    n = int(shape[0])
    expected = offset + n * dtype.itemsize
    if n == 0:
        raise ShardFormatError(f"{path}: the .npy array holds no tokens")
    if size != expected:
        raise ShardFormatError(
            f"{path}: .npy header says {n} tokens of {dtype.name} ({expected} bytes) "
            f"but the file has {size} bytes; the shard is truncated"
        )
    return ShardInfo(path, "npy", np.dtype(dtype), offset, n)


def raw_info(path: str, size: int, dtype: np.dtype) -> ShardInfo:
    """The :class:`ShardInfo` of a headerless shard of ``size`` bytes of ``dtype`` tokens."""
    if dtype.kind not in "iu":
        raise ShardFormatError(f"{path}: raw dtype {dtype} is not an integer dtype")
    if size % dtype.itemsize:
        raise ShardFormatError(
            f"{path}: {size} bytes is not a multiple of {dtype.itemsize} ({dtype.name} tokens); "
            "the shard is truncated or the dtype is wrong"
        )
    return ShardInfo(path, "raw", dtype, 0, size // dtype.itemsize)


def llmc_header(n_tokens: int, dtype: np.dtype | str = np.uint16) -> np.ndarray:
    """The 256-int32 llm.c header for ``n_tokens`` tokens stored as ``dtype``."""
    dtype = np.dtype(dtype)
    for magic, (version, want) in LLMC_FORMATS.items():
        if want == dtype:
            header = np.zeros(HEADER_INTS, dtype="<i4")
            header[:3] = (magic, version, n_tokens)
            return header
    raise ShardFormatError(f"llm.c shards hold uint16 or uint32 tokens, not {dtype}")


def write_shard(path: str | os.PathLike, tokens: np.ndarray, *, kind: str | None = None) -> ShardInfo:
    """Write ``tokens`` to ``path`` atomically as an llm.c ``.bin``, ``.npy`` or raw file.

    Args:
        path: the final file name; the format follows its suffix unless ``kind`` is given.
        tokens: a 1-D integer array, written in its own dtype.
        kind: ``"llmc"``, ``"npy"`` or ``"raw"``; default ``"npy"`` for ``.npy``, else ``"llmc"``.
    """
    path = Path(path)
    tokens = np.ascontiguousarray(tokens)
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ShardFormatError(f"{path}: tokens must be a 1-D integer array, got {tokens.dtype}{tokens.shape}")
    kind = kind or ("npy" if path.suffix == ".npy" else "llmc")
    if kind not in ("llmc", "npy", "raw"):
        raise ConfigError(f"{path}: unknown shard kind {kind!r}; use 'llmc', 'npy' or 'raw'")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        if kind == "npy":
            np.lib.format.write_array(f, tokens, allow_pickle=False)
        else:
            if kind == "llmc":
                f.write(llmc_header(len(tokens), tokens.dtype).tobytes())
            f.write(memoryview(tokens).cast("B"))  # no second copy of a 200 MB shard
    return probe_shard(path, raw_dtype=tokens.dtype)
