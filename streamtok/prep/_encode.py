"""Encode chunks of documents to token arrays, in this process or in a pool of processes.

Each document becomes ``[eot] + encode_ordinary(text)``: the end-of-text token *precedes*
every document, as llm.c's ``fineweb.py`` writes it, so a shard's document count is its
number of end-of-text ids, and text that happens to spell ``<|endoftext|>`` stays ordinary
text. A chunk's tokens depend on that chunk alone, so the stream is the same whatever
process encodes which chunk; results are taken back in submission order, with at most
``2 * workers + 2`` chunks (256 KiB each) in flight, which keeps memory flat.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .encoding import eot_token, load_encoding
from .sources import Chunk, ReadOptions, documents, input_format


@dataclass(frozen=True)
class EncodeJob:
    """What every encoding process needs: the encoding, the inputs and how to read them.

    ``tokenizer_path`` (a ``tokenizer.json``) replaces the tiktoken ``encoding``; its
    ``boundary`` id then precedes each document.
    """

    encoding: str
    dtype: str
    paths: tuple[str, ...]
    opts: ReadOptions
    tokenizer_path: str | None = None
    boundary: int = -1


def make_encoder(job: EncodeJob) -> tuple[Callable[[list[str]], list[list[int]]], int]:
    """``(encode_docs, boundary_id)`` for ``job``: a function from documents to their ids.

    Args:
        job: the encoding settings.
    """
    if job.tokenizer_path is not None:
        from .hf_tokenizer import load_tokenizer

        tok = load_tokenizer(job.tokenizer_path)
        return (lambda docs: [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]), job.boundary
    enc = load_encoding(job.encoding)
    ordinary = enc.encode_ordinary

    def encode(docs: list[str]) -> list:
        # A huge document (one long line) becomes a uint32 array straight from tiktoken: 4 bytes
        # per token instead of a list of Python ints (~36); small ones are faster as lists.
        return [ordinary(d) if len(d) < BIG_DOC_CHARS else enc.encode_to_numpy(d, disallowed_special=()) for d in docs]

    return encode, eot_token(enc)


def join_ids(rows: Iterable, boundary: int, dtype: str) -> np.ndarray:
    """``[boundary] + row`` for each row (an id list or array), as one array of ``dtype``.

    Args:
        rows: each document's ids.
        boundary: the id before each document.
        dtype: the token dtype.
    """
    parts: list[np.ndarray] = []
    ids: list[int] = []
    for row in rows:
        ids.append(boundary)
        if isinstance(row, np.ndarray):
            parts.append(np.array(ids, dtype=dtype))
            parts.append(row.astype(dtype, copy=False))
            ids = []
        else:
            ids.extend(row)
    if not parts:
        return np.array(ids, dtype=dtype)
    parts.append(np.array(ids, dtype=dtype))
    return np.concatenate(parts)


@dataclass(frozen=True)
class Encoded:
    """The tokens of one chunk and what they came from."""

    tokens: np.ndarray
    n_docs: int
    n_chars: int


BIG_DOC_CHARS = 1 << 20
_job: EncodeJob | None = None
_encode_docs: Callable[[list[str]], list[list[int]]] | None = None
_eot = 0
_formats: tuple[str, ...] = ()


def _init(job: EncodeJob, parent: int | None = None) -> None:
    global _job, _encode_docs, _eot, _formats
    if parent is not None:
        _die_with_parent(parent)
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per pool process
    _job = job
    _encode_docs, _eot = make_encoder(job)
    _formats = tuple(input_format(p, job.opts.fmt) for p in job.paths)


def _die_with_parent(parent: int) -> None:
    # A pool worker holds both ends of its task pipe, so it would wait forever after a
    # kill -9 of the main process; ask Linux to kill it with its parent instead.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def encode_chunk(chunk: Chunk) -> Encoded:
    """Tokenize the documents of one chunk (in a process set up by the pool initializer).

    Args:
        chunk: whole documents from :func:`streamtok.prep.sources.iter_chunks`.
    """
    docs = documents(chunk, _job.paths[chunk.source], _formats[chunk.source], _job.opts)
    return Encoded(join_ids(_encode_docs(docs), _eot, _job.dtype), len(docs), sum(map(len, docs)))


class EncodePool:
    """Encodes chunks in ``workers`` processes (or in this one for ``workers <= 1``), in order.

    Create it before starting threads (progress bars): the pool forks on ``__enter__``.

    Args:
        job: the encoding settings.
        workers: processes to encode in.
    """

    def __init__(self, job: EncodeJob, workers: int):
        self.job = job
        self.workers = max(int(workers), 1)
        self._pool = None

    def __enter__(self) -> EncodePool:
        if self.workers > 1:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            ctx = mp.get_context(method)
            self._pool = ctx.Pool(self.workers, initializer=_init, initargs=(self.job, os.getpid()))
        else:
            _init(self.job)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()

    def map(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, Encoded]]:
        """Each chunk with its tokens, in the order given.

        Args:
            chunks: the chunks to encode.
        """
        if self._pool is None:
            for chunk in chunks:
                yield chunk, encode_chunk(chunk)
            return
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, self._pool.apply_async(encode_chunk, (chunk,))))
            if len(pending) >= 2 * self.workers + 2:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()
