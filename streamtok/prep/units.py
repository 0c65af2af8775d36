"""Work units: the inputs cut into pieces that any process, task or node can encode alone.

A text input of ``n`` bytes is cut at nominal offsets ``k * unit_bytes``, each moved forward to
the first *split point* at or after it -- a position where a left-to-right ``str.split`` of the
whole file starts a piece: 0, or the end of a separator occurrence. Whoever computes a cut gets
the same answer from a small read at the nominal offset, so a unit's byte range, its documents
and hence its tokens do not depend on who encodes it or on how many units there are; the
concatenated units' tokens are exactly the one-process stream. For separators made of one
repeated byte (``"\\n\\n"``) a run of that byte is split from its start, so the run start is
found first; other separators that overlap themselves (``"aba"``) cannot be cut mid-file and
are refused. A parquet input is cut at row groups.

Units hold no text: a task reads its range itself from a path every node sees. An encoded
unit returns its token array (2 or 4 bytes per token, ~0.45 of the text's bytes for GPT-2)
and four counts, which the one writer turns into shards in unit order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, InputFormatError
from ._encode import EncodeJob, join_ids, make_encoder
from .sources import STDIN, ReadOptions, documents, input_format, iter_chunks

UNIT_BYTES = 32 << 20  # 32 MiB of text: ~2 s of one core's encoding, ~7M GPT-2 tokens
KILL_UNIT_ENV = "STREAMTOK_TEST_KILL_UNIT"  # "k:MARKER": a task encoding unit k dies once, for tests


@dataclass(frozen=True)
class Unit:
    """Input ``source`` from nominal position ``lo`` to ``hi`` (bytes, or rows for parquet).

    ``lo_exact``: ``lo`` is already a split point (a resume point), not a nominal offset.
    """

    index: int
    source: int
    lo: int
    hi: int
    lo_exact: bool = False


@dataclass(frozen=True)
class Piece:
    """Tokens of input ``source`` from split point ``start`` to ``end``, with their counts.

    A local chunk or an encoded unit; ``line`` is the line number at ``start`` (0: unknown),
    ``prefix_sha256`` the hash of stdin before ``start`` (stdin only).
    """

    source: int
    start: int
    end: int
    tokens: np.ndarray
    n_docs: int
    n_chars: int
    n_bytes: int
    line: int = 0
    prefix_sha256: str | None = None


def check_separator(opts: ReadOptions, paths: list[str]) -> None:
    """Refuse inputs that cannot be cut into units (stdin; a separator overlapping itself).

    Args:
        opts: how inputs are read.
        paths: the inputs.
    """
    if STDIN in paths:
        raise ConfigError("stdin ('-') cannot be split into tasks; write it to a file every task can read")
    sep = opts.separator.encode("utf-8")
    n = len(sep)
    uses_sep = any(input_format(p, opts.fmt) == "txt" for p in paths)
    if uses_sep and n > 1 and sep != sep[:1] * n and any(sep[:k] == sep[-k:] for k in range(1, n)):
        raise ConfigError(
            f"separator {opts.separator!r} overlaps itself, so a file cannot be cut between tasks; "
            "use the local engine or another separator"
        )


def plan_units(paths: list[str], sizes: list[int], opts: ReadOptions, unit_bytes: int = UNIT_BYTES) -> list[Unit]:
    """Every unit of the inputs, in stream order.

    Args:
        paths: the inputs.
        sizes: their sizes in bytes (text) -- ignored for parquet, which is cut at row groups.
        opts: how inputs are read.
        unit_bytes: nominal bytes per text unit.
    """
    units: list[Unit] = []
    for source, (path, size) in enumerate(zip(paths, sizes)):
        if input_format(path, opts.fmt) == "parquet":
            for lo, hi in _row_groups(path):
                units.append(Unit(len(units), source, lo, hi))
            continue
        for lo in range(0, max(size, 1), unit_bytes):
            units.append(Unit(len(units), source, lo, min(lo + unit_bytes, size)))
    return units


def resume_units(units: list[Unit], source: int, start: int) -> list[Unit]:
    """The units from split point ``start`` of input ``source`` on (the first one cut short).

    Args:
        units: the whole plan.
        source: the input to resume in.
        start: a split point (byte offset or row) of it.
    """
    out = []
    for u in units:
        if u.source < source or (u.source == source and u.hi <= start and not (u.hi == start == u.lo)):
            continue
        if u.source == source and u.lo < start:
            u = Unit(u.index, u.source, start, u.hi, lo_exact=True)
        out.append(u)
    return out


def _row_groups(path: str) -> list[tuple[int, int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading parquet needs pyarrow; pip install 'streamtok[parquet]'") from None
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a bad file
        raise InputFormatError(f"{path}: not a readable parquet file ({exc})") from None
    out, row = [], 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        out.append((row, row + n))
        row += n
    return out


def split_point_at(path: str, pos: int, sep: bytes, size: int) -> int:
    """The first split point at or after ``pos`` of a left-to-right split of the file on ``sep``.

    Args:
        path: the text input.
        pos: a byte offset.
        sep: the separator (not overlapping itself, or one repeated byte).
        size: the file's size.
    """
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    n = len(sep)
    with open(path, "rb") as f:
        at = max(pos - n, 0)
        while True:
            r = _find(f, sep, at, size)
            if r < 0:
                return size
            if n == 1 or sep != sep[:1] * n:
                if r + n >= pos:
                    return r + n
                at = r + 1
                continue
            # A run of the separator's byte: pieces are cut at run_start + k*n.
            s, e = _run_bounds(f, r, sep[:1], size)
            k = max(1, -(-(pos - s) // n))
            if s + k * n <= e:
                return s + k * n
            at = e


def _find(f, sep: bytes, at: int, size: int, block: int = 1 << 20) -> int:
    keep = len(sep) - 1
    while at < size:
        f.seek(at)
        data = f.read(block + keep)
        r = data.find(sep)
        if r >= 0:
            return at + r
        if len(data) <= keep:
            return -1
        at += len(data) - keep
    return -1


def _run_bounds(f, r: int, byte: bytes, size: int, block: int = 1 << 16) -> tuple[int, int]:
    s = r
    while s > 0:
        lo = max(s - block, 0)
        f.seek(lo)
        data = f.read(s - lo)
        kept = len(data.rstrip(byte))
        s = lo + kept
        if kept:
            break
    e = r
    while e < size:
        f.seek(e)
        data = f.read(block)
        run = len(data) - len(data.lstrip(byte))
        e += run
        if run < len(data) or not data:
            break
    return s, e


_encoders: dict = {}


def run_unit(job: EncodeJob, unit: Unit) -> Piece:
    """Encode ``unit`` of ``job`` in this process (a Ray task, an array task), loading the encoder once.

    Args:
        job: the encoding settings and inputs.
        unit: the unit.
    """
    if job not in _encoders:
        _encoders.clear()
        _encoders[job] = make_encoder(job)
    encode, boundary = _encoders[job]
    _test_kill_hook(unit)
    return encode_unit(unit, job.paths[unit.source], job.opts, encode, boundary, job.dtype)


def _test_kill_hook(unit: Unit) -> None:
    # "k:MARKER": the first process to encode unit k creates MARKER and dies by SIGKILL.
    value = os.environ.get(KILL_UNIT_ENV)
    if not value:
        return
    index, _, marker = value.partition(":")
    if unit.index == int(index):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def encode_unit(unit: Unit, path: str, opts: ReadOptions, encode, boundary: int, dtype: str) -> Piece:
    """Read and encode one unit: ``[boundary] + encode(doc)`` for each of its documents.

    Args:
        unit: the unit.
        path: its input file.
        opts: how inputs are read.
        encode: a function from a list of documents to a list of id lists.
        boundary: the id written before each document.
        dtype: the token dtype.
    """
    fmt = input_format(path, opts.fmt)
    if fmt == "parquet":
        start, end, nbytes = unit.lo, unit.hi, _parquet_bytes(path, unit.lo, unit.hi)
    else:
        size = os.path.getsize(path)
        sep = b"\n" if fmt == "jsonl" else opts.separator.encode("utf-8")
        start = unit.lo if unit.lo_exact else split_point_at(path, unit.lo, sep, size)
        end = max(split_point_at(path, unit.hi, sep, size), start)
        nbytes = end - start
    parts = []
    n_docs = n_chars = 0
    for chunk in _unit_chunks(path, unit.source, opts, start, end, fmt):
        docs = documents(chunk, path, fmt, opts)
        parts.append(join_ids(encode(docs), boundary, dtype))
        n_docs += len(docs)
        n_chars += sum(map(len, docs))
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return Piece(unit.source, start, end, tokens, n_docs, n_chars, nbytes)


def _parquet_bytes(path: str, lo: int, hi: int) -> int:
    # Telescoping shares of the file size: the units of a file sum to its size exactly.
    import pyarrow.parquet as pq

    rows = max(pq.ParquetFile(path).metadata.num_rows, 1)
    size = os.path.getsize(path)
    return size * hi // rows - size * lo // rows


def _unit_chunks(path: str, source: int, opts: ReadOptions, start: int, end: int, fmt: str) -> Iterator:
    # Line numbers are not known mid-file: 0 makes error messages name the byte offset instead.
    yield from iter_chunks(path, source, opts, start=start, line=0, end=end)
