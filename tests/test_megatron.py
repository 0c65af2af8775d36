"""Megatron ``.bin/.idx`` (MMIDIDX) shards: detection, checks, and reading in every documents mode."""

import os
import struct

import numpy as np
import pytest
from _util import docs_of, write_megatron

import streamtok
from streamtok._formats import probe_shard
from streamtok.documents.sidecar import document_starts
from streamtok.errors import ShardFormatError


@pytest.fixture
def megatron_dir(tmp_path):
    rng = np.random.default_rng(3)
    all_docs, parts = [], []
    for k in range(2):
        docs = docs_of(rng, 70)
        parts.append(write_megatron(tmp_path / f"corpus_{k}_text_document", docs, sequences_per_doc=2 if k else 1))
        all_docs += docs
    return tmp_path, np.concatenate(parts), all_docs


def test_probe_reads_dtype_and_size_from_the_idx(tmp_path):
    tokens = write_megatron(tmp_path / "a", [[1, 2, 3], [4, 5]], np.int32)
    info = probe_shard(tmp_path / "a.bin")
    assert (info.kind, info.dtype, info.offset, info.n_tokens) == ("megatron", np.dtype(np.int32), 0, 5)
    assert document_starts(tmp_path / "a.bin").tolist() == [0, 3]
    assert streamtok.MemmapReader([str(tmp_path / "a.bin")])[0:5].tolist() == tokens.tolist()


def test_documents_span_their_sequences(tmp_path):
    write_megatron(tmp_path / "b", [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10]], np.uint16, sequences_per_doc=2)
    assert document_starts(tmp_path / "b.bin").tolist() == [0, 4]


def test_stream_mode_reads_megatron_shards(megatron_dir):
    path, tokens, _ = megatron_dir
    loader = streamtok.loader(path, seq_len=8, batch_size=2, split="all", mode="sequential", metrics=False)
    rows = [x for x, _ in loader]
    assert np.array_equal(np.concatenate([r.numpy().reshape(-1) for r in rows]), tokens[: 8 * 2 * len(rows)])


@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_document_modes_follow_the_idx(megatron_dir, documents):
    path, tokens, docs = megatron_dir
    doc_starts = set(np.cumsum([0] + [len(d) for d in docs[:-1]]).tolist())
    T = 16
    whole = {np.asarray(d, dtype=np.uint16).tobytes() for d in docs}
    view = np.lib.stride_tricks.sliding_window_view(tokens, T)
    extra = {"block_docs": 20} if documents == "pack" else {}
    for x, y, doc in streamtok.loader(path, seq_len=T, batch_size=2, split="all", documents=documents, metrics=False, **extra):
        pid = doc.position_ids.numpy()
        for r in range(2):
            restarts = np.flatnonzero(pid[r] == 0).tolist()
            if documents == "pack":  # pieces: whole documents, the last maybe a prefix
                row = np.concatenate([x[r].numpy(), y[r, -1:].numpy()]).astype(np.uint16)
                bounds = restarts + [T + 1]
                assert all(row[a:b].tobytes() in whole for a, b in zip(bounds[:-2], bounds[1:-1]))
                continue
            (s,) = np.flatnonzero((view == x[r].numpy()).all(axis=1))
            assert restarts == [0] + [c for c in range(1, T) if s + c in doc_starts]
            if documents == "bos":
                assert s in doc_starts


def test_missing_idx_is_named(megatron_dir):
    path, _, _ = megatron_dir
    os.remove(path / "corpus_1_text_document.idx")
    with pytest.raises(ShardFormatError, match=r"corpus_1_text_document\.idx is missing"):
        streamtok.MemmapReader(path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"XXIDIDX\x00\x00" + b[9:], "not a Megatron MMIDIDX index"),
        (lambda b: b[:9] + struct.pack("<Q", 2) + b[17:], "version 2"),
        (lambda b: b[:17] + bytes([6]) + b[18:], "dtype code 6"),
        (lambda b: b[:-8], "truncated or corrupt"),
        (lambda b: b[:34] + struct.pack("<i", 99) + b[38:], "but the .bin has 14 bytes"),
    ],
)
def test_inconsistent_idx_is_named(tmp_path, damage, message):
    write_megatron(tmp_path / "c", [[1, 2, 3], [4, 5, 6, 7]])
    idx = tmp_path / "c.idx"
    idx.write_bytes(damage(idx.read_bytes()))
    with pytest.raises(ShardFormatError, match=message):
        probe_shard(tmp_path / "c.bin")


def test_a_new_idx_is_a_new_index(tmp_path):
    write_megatron(tmp_path / "d", [[1, 2, 3, 4], [5, 6]])
    assert document_starts(tmp_path / "d.bin").tolist() == [0, 4]
    before = os.stat(tmp_path / "d.bin")
    write_megatron(tmp_path / "d", [[1, 2], [3, 4, 5, 6]])  # same tokens, other documents
    os.utime(tmp_path / "d.bin", ns=(before.st_atime_ns, before.st_mtime_ns))  # the .bin looks unchanged
    os.utime(tmp_path / "d.idx", ns=(before.st_atime_ns + 1, before.st_mtime_ns + 1))
    assert document_starts(tmp_path / "d.bin").tolist() == [0, 2]
