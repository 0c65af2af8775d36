"""Shared test helpers: tiny shards whose tokens are their own positions, and the resume checker."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from streamtok._formats import write_shard

TESTS = Path(__file__).resolve().parent  # the helpers (s3_server, blocks_client, scripts) live here
ROOT = TESTS.parent  # the repository


def make_shards(
    directory: str | os.PathLike,
    lengths: list[int],
    *,
    kind: str = "llmc",
    dtype: type = np.uint32,
    prefix: str = "shard",
    start: int = 0,
) -> np.ndarray:
    """Write shards whose token ``i`` is ``start + i`` (so a window tells where it began)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".npy" if kind == "npy" else ".bin"
    pos, parts = start, []
    for k, n in enumerate(lengths):
        tokens = np.arange(pos, pos + n, dtype=np.int64).astype(dtype)
        write_shard(directory / f"{prefix}_{k:06d}{suffix}", tokens, kind=kind)
        parts.append(tokens)
        pos += n
    return np.concatenate(parts)


def batch_hash(x: torch.Tensor, y: torch.Tensor, doc: object = None) -> str:
    """A hash of one batch: ``x``, ``y`` and, with documents, the boundaries ``doc`` carries."""
    h = hashlib.sha1(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    if doc is not None:
        h.update(doc.cu_seqlens.numpy().tobytes())
        h.update(doc.position_ids.numpy().tobytes())
    return h.hexdigest()


def take(loader, n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for batch in loader:
        out.append(batch)
        if n is not None and len(out) >= n:
            break
    return out


def roundtrip(state: dict) -> dict:
    """What a checkpoint written as JSON and read back gives."""
    return json.loads(json.dumps(state))


def _pass(loader) -> list[str]:
    """One pass over ``loader``, as batch hashes."""
    return [batch_hash(*batch) for batch in loader]


def check_resume(factory: Callable[[], object], midpoints: list[int], passes: int = 1) -> int:
    """Resume at every midpoint of every pass, and at each pass's start and end; compare with the full stream.

    The reference is ``passes + 1`` passes over one fresh loader (``for p in range(E): for b
    in loader``). For each pass ``p`` and step ``k`` of it (0: after the previous loop ended;
    the midpoints; its last step), a loader that ran ``p`` passes and ``k`` batches saves its
    state, a fresh one loads it: its first pass must give exactly the rest of pass ``p`` (none
    at the last step: a state saved inside the loop after the last batch resumes into an
    empty pass, as StatefulDataLoader's does), its next passes the reference's. A state saved
    after the loop of pass ``p`` ended resumes into pass ``p + 1``.

    Args:
        factory: builds a fresh loader (each call the same settings).
        midpoints: steps inside a pass to resume at (those past a pass's end are skipped).
        passes: passes to check.

    Returns:
        The length of the first pass.
    """
    ref_loader = factory()
    ref = [_pass(ref_loader) for _ in range(passes + 1)]
    for p in range(passes):
        n = len(ref[p])
        assert n > 0, f"pass {p} is empty: {[len(r) for r in ref]}"
        for k in sorted({0, *(m for m in midpoints if 0 < m < n), n}):
            first = factory()
            for _ in range(p):
                _pass(first)
            head = [batch_hash(*b) for b in take(first, k)] if k else []
            assert head == ref[p][:k], f"pass {p}: the first {k} batches differ from the reference"
            resumed = factory()
            resumed.load_state_dict(roundtrip(first.state_dict()))
            tail = _pass(resumed)
            if k == n:
                assert tail == [], f"pass {p}: a state saved after its last batch resumed into {len(tail)} batches, not 0"
            else:
                assert head + tail == ref[p], f"pass {p}: resume at step {k} diverged"
            later = [_pass(resumed) for _ in range(p + 1, passes + 1)]
            assert later == ref[p + 1 :], f"pass {p}: the passes after a resume at step {k} diverged"
        ended = factory()
        for _ in range(p + 1):
            _pass(ended)
        resumed = factory()
        resumed.load_state_dict(roundtrip(ended.state_dict()))
        assert _pass(resumed) == ref[p + 1], f"a state saved after pass {p} ended did not resume into pass {p + 1}"
    return len(ref[0])


def run_or_show(cmd: list[str], **kw) -> None:
    """Run a helper process; if it fails, fail with the tail of its output (not a bare exit code)."""
    import subprocess

    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd[-3:]} exited {out.returncode}:\n{(out.stdout + out.stderr)[-4000:]}"


# Document shards (tests/documents, attention, locate, states) and Megatron pairs (formats, inspect, storage).
BOS = 50256


def make_doc_shards(directory, n_shards=3, docs=60, *, seed=0, median=20, lead=3, lead_all=False):
    """uint16 llm.c shards of documents that each start with BOS; the first shard (``lead_all``:
    every shard) starts with ``lead`` tokens of a document begun before it. Returns (all
    tokens, global document starts)."""
    rng = np.random.default_rng(seed)
    parts, starts, pos = [], [], 0
    for k in range(n_shards):
        pieces = [rng.integers(0, 50000, lead if k == 0 or lead_all else 0).astype(np.uint16)]
        for _ in range(docs):
            n = 1 + int(rng.lognormal(np.log(median), 0.9))
            d = rng.integers(0, 50000, n).astype(np.uint16)
            d[0] = BOS
            pieces.append(d)
        tokens = np.concatenate(pieces)
        write_shard(os.path.join(directory, f"docs_{k:03d}.bin"), tokens)
        starts += (np.flatnonzero(tokens == BOS) + pos).tolist()
        parts.append(tokens)
        pos += len(tokens)
    return np.concatenate(parts), np.array(starts)


CODES = {np.dtype(np.uint8): 1, np.dtype(np.int32): 4, np.dtype(np.uint16): 8}


def write_megatron(prefix, documents, dtype=np.uint16, *, sequences_per_doc=1):
    """Write ``prefix.bin`` and ``prefix.idx`` as Megatron-LM's indexed dataset writer lays them out:
    magic, version 1, dtype code, sequence and document-entry counts, int32 sequence lengths,
    int64 byte pointers, int64 document index (sequence index of each document start, then the count)."""
    dtype = np.dtype(dtype)
    sequences = []
    doc_index = [0]
    for doc in documents:
        doc = np.asarray(doc, dtype=dtype)
        sequences += np.array_split(doc, sequences_per_doc)
        doc_index.append(len(sequences))
    lengths = np.array([len(s) for s in sequences], dtype=np.int32)
    pointers = np.concatenate(([0], np.cumsum(lengths[:-1], dtype=np.int64) * dtype.itemsize)).astype(np.int64)
    with open(f"{prefix}.bin", "wb") as f:
        f.write(np.concatenate(sequences).astype(dtype).tobytes())
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", CODES[dtype]))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(doc_index)))
        f.write(lengths.tobytes())
        f.write(pointers.tobytes())
        f.write(np.array(doc_index, dtype=np.int64).tobytes())
    return np.concatenate(sequences)


def docs_of(rng, n, median=12, start=1):
    return [rng.integers(start, 1000, 1 + int(rng.lognormal(np.log(median), 0.8))) for _ in range(n)]


def write_source_docs(root, docs, bos, seed):
    """uint16 llm.c shards of short documents for each mixture source ``name`` of ``docs`` (``{name:
    (shards, documents per shard)}``): source number ``s`` writes tokens in ``[1000 (s+1) + 1, 1000
    (s+1) + 999)``, so a row shows its source, each document led by ``bos[name]``. Returns ``{name:
    its directory}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for s, (name, (shards, per_shard)) in enumerate(docs.items()):
        for k in range(shards):
            pieces = []
            for _ in range(per_shard):
                n = 1 + int(rng.lognormal(np.log(6), 0.8))
                d = rng.integers(1000 * (s + 1) + 1, 1000 * (s + 1) + 999, n)
                d[0] = bos[name]
                pieces.append(d)
            write_shard(root / name / f"{name}_{k:03d}.bin", np.concatenate(pieces).astype(np.uint16))
        out[name] = root / name
    return out


def read_after_truncation(loader_code, truncate_code, batches=2000, timeout=120):
    """Run ``loader_code`` (which makes ``loader``) in a fresh process, take 3 batches, run
    ``truncate_code``, read up to ``batches`` more: the completed process, exit status 3 with
    ``ERROR: <message>`` on stdout when a ``ShardFormatError`` was raised (a SIGBUS is -7)."""
    import subprocess
    import sys
    import textwrap

    script = "import os, sys, warnings, streamtok\nwarnings.simplefilter('ignore')\n" + textwrap.dedent(loader_code) + textwrap.dedent(
        f"""
        it = iter(loader)
        for _ in range(3):
            next(it)
        {truncate_code.strip()}
        try:
            for _ in range({batches}):
                next(it)
        except streamtok.ShardFormatError as exc:
            print("ERROR:", exc)
            sys.exit(3)
        print("no error")
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


def same_batches(a, b, n=None):
    """Assert two loaders' batches are equal, tensors bit for bit with their dtypes and a
    batch's ``doc`` part by part, for the first ``n`` (``None``: until one ends); returns how
    many were compared (at least one)."""
    count = 0
    for x, y in zip(a, b):
        for ta, tb in zip(x, y):
            if isinstance(ta, torch.Tensor):
                assert ta.dtype == tb.dtype and torch.equal(ta, tb)
            else:  # Documents: compare their parts
                for pa, pb in zip(ta, tb):
                    assert torch.equal(pa, pb) if isinstance(pa, torch.Tensor) else pa == pb
        count += 1
        if n is not None and count == n:
            break
    assert count > 0
    return count


def readers_of(root, sizes):
    """One single-shard source per size, ``{"s0": MemmapReader, ...}`` (mixture property tests)."""
    from streamtok import MemmapReader

    readers = {}
    for i, n in enumerate(sizes):
        make_shards(root / f"s{i}", [n])
        readers[f"s{i}"] = MemmapReader(root / f"s{i}")
    return readers
