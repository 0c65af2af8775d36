"""ShardSink: cut a stream of token arrays into fixed-size shards, val first, then train.

Tokens arrive in order (one array per input chunk) and are copied into one preallocated
buffer of ``shard_tokens`` ids (200 MB for the default 100M uint16 tokens, as llm.c's own
script holds); a full buffer is written as one shard with
:func:`streamtok._formats.write_shard` (temporary name, fsync, rename), so a shard file
under its final name is always complete. Every shard holds exactly ``shard_tokens`` tokens
except the last of each split.

The validation split is the first documents of the stream: it ends at the first document
start (an end-of-text token, which precedes every document) at or after ``val_tokens``
tokens, so no document is cut between val and train. Val shards are named
``<prefix>_val_000000.bin``, train shards ``<prefix>_train_000000.bin``, each split numbered
from 0, which is what :meth:`streamtok.ShardLister.split` recognises.

Beside each shard goes its document index, ``<shard>.docidx`` (:mod:`streamtok.documents.sidecar`:
the offsets of its end-of-text ids, 8 bytes per document, one scan of the shard just written,
its pages still cached). It is *portable*, keyed by the shard's size and content rather than
its mtime, so a rerun, another worker count or engine, or a resume writes the same bytes, and
the loader accepts it after a copy; the manifest lists it with its sha256 next to the shard.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._digest import file_sha256
from .._formats import write_shard
from ..documents.sidecar import cache_dir, document_starts, write_document_index
from ..errors import ConfigError, ShardFormatError


@dataclass(frozen=True)
class ShardPlan:
    """Where and how shards are written.

    Args:
        out_dir: the output directory.
        prefix: file name prefix (``<prefix>_train_000000.bin``).
        shard_format: ``"bin"`` (llm.c header) or ``"npy"``.
        shard_tokens: tokens per shard (the last of each split may hold fewer).
        val_tokens: tokens (rounded up to a document end) for the val split; 0 for none.
        dtype: the token dtype, ``"uint16"`` or ``"uint32"``.
        eot: the end-of-text id that starts every document.
    """

    out_dir: str
    prefix: str
    shard_format: str
    shard_tokens: int
    val_tokens: int
    dtype: str
    eot: int

    def name(self, split: str, index: int) -> str:
        return f"{self.prefix}_{split}_{index:06d}.{self.shard_format}"


class ShardSink:
    """Buffers tokens and writes a shard each time ``shard_tokens`` have arrived.

    Args:
        plan: the output settings.
        state: a :meth:`state` of an earlier run taken right after a shard was written, to
            continue that run; ``None`` starts from nothing.
    """

    def __init__(self, plan: ShardPlan, state: dict[str, Any] | None = None):
        self.plan = plan
        self.buf = np.empty(plan.shard_tokens, dtype=plan.dtype)
        self.fill = 0
        if state is None:
            state = {"split": "val" if plan.val_tokens > 0 else "train", "next": {"val": 0, "train": 0}, "position": 0}
        self.split: str = state["split"]
        self.next: dict[str, int] = dict(state["next"])
        self.position: int = state["position"]
        self.written: list[dict[str, Any]] = []

    def state(self) -> dict[str, Any]:
        """The sink's position (valid when the buffer is empty, right after a shard)."""
        return {"split": self.split, "next": dict(self.next), "position": self.position}

    def feed(self, tokens: np.ndarray) -> Iterator[int]:
        """Take ``tokens``; after each shard written, yield how many of them were consumed.

        Args:
            tokens: the next ids of the stream, in order.
        """
        i, n = 0, len(tokens)
        while i < n:
            end = n
            if self.split == "val":
                need = max(self.plan.val_tokens - self.position, 0)
                starts = np.flatnonzero(tokens[i + need :] == self.plan.eot) if i + need < n else ()
                if len(starts):
                    end = i + need + int(starts[0])
            while i < end:
                take = min(self.plan.shard_tokens - self.fill, end - i)
                self.buf[self.fill : self.fill + take] = tokens[i : i + take]
                self.fill += take
                self.position += take
                i += take
                if self.fill == self.plan.shard_tokens:
                    self._write()
                    yield i
            if end < n:  # the val split ends here, at a document start
                wrote = self.fill > 0
                if wrote:
                    self._write()
                self.split = "train"
                if wrote:
                    yield i

    def finish(self) -> None:
        """Write the last, partial shard."""
        if self.fill:
            self._write()

    def _write(self) -> None:
        name = self.plan.name(self.split, self.next[self.split])
        path = os.path.join(self.plan.out_dir, name)
        tokens = self.buf[: self.fill]
        write_shard(path, tokens, kind="npy" if self.plan.shard_format == "npy" else "llmc")
        index = write_document_index(path, bos_id=self.plan.eot, portable=True)
        if index.parent != Path(os.path.abspath(path)).parent:
            raise ConfigError(f"--out {self.plan.out_dir}: cannot write the document index {index.name} beside {name}")
        n_docs = int(np.count_nonzero(tokens == self.plan.eot))
        indexed = len(document_starts(path, bos_id=self.plan.eot))
        if indexed != n_docs:  # the index read back is not the one of the tokens just written
            raise ShardFormatError(f"{index}: lists {indexed} document starts, but {name} holds {n_docs}; is something writing --out?")
        self.written.append(
            {
                "name": name,
                "split": self.split,
                "n_tokens": int(self.fill),
                "n_docs": n_docs,
                "sha256": file_sha256(path, cache_dir()),  # hashed once for the index's key
                "docidx": index.name,
                "docidx_sha256": sha256_file(str(index)),
            }
        )
        self.next[self.split] += 1
        self.fill = 0


def sha256_file(path: str, block: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read 4 MiB at a time.

    Args:
        path: the file.
        block: bytes read at a time.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


