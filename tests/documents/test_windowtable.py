"""The window table (``documents="mask"`` with aligned orders) gives exactly the boundaries of the search."""

import pickle

import numpy as np
import pytest
import torch
from _util import check_resume, make_doc_shards

import streamtok
from streamtok.documents import windowtable
from streamtok.documents.index import DocumentIndex


def truth(rows, seq_len, batch_size, doc_set):
    """Per batch, ``cu_seqlens`` from the definition: each row's start, then every document
    start strictly inside the row."""
    out = []
    for b in range(0, len(rows), batch_size):
        cu = []
        for r, s in enumerate(rows[b : b + batch_size].tolist()):
            cu += [r * seq_len] + [r * seq_len + c for c in range(1, seq_len) if s + c in doc_set]
        out.append(cu + [batch_size * seq_len])
    return out


@pytest.fixture
def docs(tmp_path):
    # lead_all: every shard starts inside a document begun before it; short and long documents
    tokens, starts = make_doc_shards(tmp_path, n_shards=4, docs=50, median=12, lead_all=True, seed=4)
    return tmp_path, tokens, starts


@pytest.mark.parametrize("seq_len", [5, 16, 64])
@pytest.mark.parametrize("stride", [0, 1])  # period T (sequential) or T + 1 (shuffled orders)
def test_table_matches_the_definition_and_the_search_on_random_aligned_rows(docs, seq_len, stride):
    path, tokens, starts = docs
    index = DocumentIndex(streamtok.MemmapReader(path))
    period = seq_len + stride
    doc_set = set(starts.tolist())
    rng = np.random.default_rng(seq_len + stride)
    n_windows = (len(tokens) - seq_len) // period + 1  # every window inside the data, the last ones too
    for batch_size in (1, 3, 8):
        rows = rng.integers(0, n_windows, 5 * batch_size) * period
        rows[0] = 0  # the first window (its row start reads the table's padding)
        rows[-1] = (n_windows - 1) * period
        rows[1 % len(rows)] = rows[-1]  # a window twice
        fast = index.batch_documents(rows, seq_len, batch_size, period)
        slow = index.batch_documents(rows, seq_len, batch_size)
        assert len(fast) == len(slow) == len(rows) // batch_size
        for f, s, cu in zip(fast, slow, truth(rows, seq_len, batch_size, doc_set)):
            assert f.cu_seqlens.dtype == torch.int32 and f.cu_seqlens.tolist() == cu == s.cu_seqlens.tolist()
            assert f.max_seqlen == s.max_seqlen == max(np.diff(cu))
            assert torch.equal(f.position_ids, s.position_ids)
    assert index.window_table(period, seq_len) is not None  # the fast path was taken
    # every window of the data, in order: each document start inside one exactly
    rows = np.arange(n_windows - n_windows % 2, dtype=np.int64) * period
    fast = index.batch_documents(rows, seq_len, 2, period)
    assert [d.cu_seqlens.tolist() for d in fast] == truth(rows, seq_len, 2, doc_set)


def test_rows_off_the_period_or_past_the_data_are_searched(docs):
    path, tokens, starts = docs
    index = DocumentIndex(streamtok.MemmapReader(path))
    seq_len, period = 16, 17
    table = index.window_table(period, seq_len)
    doc_set = set(starts.tolist())
    odd = np.array([0, 17, 35, 51], dtype=np.int64)  # 35 is not a multiple of 17
    assert table.batch_boundaries(odd, 2) is None
    got = index.batch_documents(odd, seq_len, 2, period)
    assert [d.cu_seqlens.tolist() for d in got] == truth(odd, seq_len, 2, doc_set)
    past = np.array([0, table.n_windows * period], dtype=np.int64)
    assert table.batch_boundaries(past, 2) is None
    assert table.batch_boundaries(np.array([-period, 0]), 2) is None


def test_a_table_over_its_memory_bound_is_not_built(docs, monkeypatch):
    path, tokens, starts = docs
    index = DocumentIndex(streamtok.MemmapReader(path))
    need = windowtable.table_bytes(len(tokens), len(starts), 9, 8)
    monkeypatch.setattr(windowtable, "MAX_BYTES", need - 1)
    import streamtok.documents.index as index_module

    monkeypatch.setattr(index_module, "MAX_BYTES", need - 1)
    assert index.window_table(9, 8) is None
    rows = np.arange(6, dtype=np.int64) * 9
    got = index.batch_documents(rows, 8, 3, 9)  # the search, same result
    assert [d.cu_seqlens.tolist() for d in got] == truth(rows, 8, 3, set(starts.tolist()))
    monkeypatch.setattr(index_module, "MAX_BYTES", need)
    assert index.window_table(10, 8).nbytes <= need  # another period: built, within its bound


def test_the_table_is_not_pickled(docs):
    path, _, _ = docs
    index = DocumentIndex(streamtok.MemmapReader(path))
    index.window_table(17, 16)
    clone = pickle.loads(pickle.dumps(index))
    assert "_tables" not in clone.__dict__ and clone.window_table(17, 16) is not None


@pytest.mark.parametrize("mode,period", [("shuffle", 17), ("block_shuffle", 17), ("sequential", 16), ("random", None)])
def test_the_loader_uses_the_table_for_aligned_orders_only(docs, mode, period):
    path, tokens, starts = docs
    loader = streamtok.loader(path, seq_len=16, batch_size=4, split="all", documents="mask", mode=mode, metrics=False)
    assert loader.collator.period == period
    doc_set = set(starts.tolist())
    view = np.lib.stride_tricks.sliding_window_view(tokens, 16)
    for x, _, doc in loader:
        rows = np.array([int(np.flatnonzero((view == row).all(axis=1))[0]) for row in x.numpy()])
        assert doc.cu_seqlens.tolist() == truth(rows, 16, 4, doc_set)[0]


@pytest.mark.parametrize("mode", ["shuffle", "sequential"])
def test_mask_rows_of_two_ranks_resume_exactly(docs, mode):
    path, _, _ = docs

    def factory():
        return streamtok.loader(
            path, seq_len=8, batch_size=3, split="all", documents="mask", mode=mode, epochs=2, metrics=False,
            rank=1, world_size=2,
        )

    assert check_resume(factory, [1, 30, 71]) > 71


@pytest.mark.parametrize("seq_len", [65535, 65536, 70000])  # columns in uint16 up to T = 65535, then uint32
def test_rows_of_64k_tokens_and_more(tmp_path, seq_len):
    from _util import BOS

    from streamtok._formats import write_shard

    rng = np.random.default_rng(seq_len)
    tokens = rng.integers(0, 50000, 5 * seq_len + 123).astype(np.uint16)
    starts = np.unique(np.concatenate((rng.integers(0, len(tokens), 40), [seq_len, seq_len + 1, seq_len - 1])))
    tokens[starts] = BOS
    write_shard(tmp_path / "long.bin", tokens)
    index = DocumentIndex(streamtok.MemmapReader(tmp_path))
    for period in (seq_len, seq_len + 1):
        rows = np.array([0, 1, 3, 2], dtype=np.int64) * period
        fast = index.batch_documents(rows, seq_len, 2, period)
        assert index.window_table(period, seq_len).cols.dtype == (np.uint16 if seq_len < 1 << 16 else np.uint32)
        for doc, b in zip(fast, range(0, 4, 2)):
            cu = []
            for r, s in enumerate(rows[b : b + 2].tolist()):
                inside = starts[(starts > s) & (starts < s + seq_len)] - s
                cu += [r * seq_len] + (r * seq_len + inside).tolist()
            assert doc.cu_seqlens.tolist() == cu + [2 * seq_len]
            assert doc.max_seqlen == max(np.diff(cu + [2 * seq_len]))


@pytest.mark.parametrize("documents", ["stream", "mask", "bos", "pack"])
def test_a_batch_the_caller_let_go_is_freed_before_the_next_is_made(docs, documents, monkeypatch):
    """When the next batch's ``(x, y)`` are allocated, the loader holds no reference to the
    batch it handed out before (a held one keeps its buffers from being reused: fresh,
    cache-cold memory for every batch, ~3% of a window batch's time at B=32, T=1024)."""
    import weakref

    from streamtok import dataloader

    path, _, _ = docs
    refs: list = []
    alive: list = []
    split = dataloader.split

    def spy(buf, *args, **kw):
        alive.append([r() is not None for r in refs])
        return split(buf, *args, **kw)

    monkeypatch.setattr(dataloader, "split", spy)
    it = iter(streamtok.loader(path, seq_len=8, batch_size=2, split="all", documents=documents, metrics=False))
    batch = next(it)
    refs[:] = [weakref.ref(batch[0]), weakref.ref(batch[1])]
    del batch
    next(it)
    assert alive[-1] == [False, False]


def test_a_mixture_reads_each_source_grid_from_one_table(tmp_path):
    """A mixture's windows start at multiples of the period from each source's first token."""
    dirs = {}
    for i, name in enumerate(("a", "b", "c")):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        make_doc_shards(dirs[name], n_shards=2, docs=30, median=9, seed=10 + i, lead=i + 1)
    seq_len, period = 8, 9
    loader = streamtok.loader(dirs, weights={"a": 0.5, "b": 0.3, "c": 0.2}, seq_len=seq_len, batch_size=3,
                              split="all", documents="mask", metrics=False)
    assert loader.collator._collator.period == period
    index = loader.collator.index
    origins = index.window_origins()
    assert len(origins) == 3 and origins[0] == 0
    table = index.window_table(period, seq_len)
    ends = list(origins[1:]) + [index.reader.n_tokens]
    rng = np.random.default_rng(1)
    rows = []
    for o, end in zip(origins, ends):
        n = (end - o - seq_len) // period + 1  # windows whose T tokens lie inside the source
        rows += (o + rng.integers(0, n, 4) * period).tolist() + [o, o + (n - 1) * period]
    rows = np.array(rows, dtype=np.int64)
    assert table.batch_boundaries(rows, 3) is not None
    fast = index.batch_documents(rows, seq_len, 3, period)
    slow = index.batch_documents(rows, seq_len, 3)
    assert [d.cu_seqlens.tolist() for d in fast] == [d.cu_seqlens.tolist() for d in slow]
    assert [d.max_seqlen for d in fast] == [d.max_seqlen for d in slow]
    # a window running past the first source's end into the second: searched, not read
    o, end = origins[0], ends[0]
    across = o + ((end - o - seq_len) // period + 1) * period
    assert across < end  # the data are made so
    assert table.batch_boundaries(np.array([across, 0, 0]), 3) is None
    assert table.batch_boundaries(np.array([origins[1] + 1, 0, 0]), 3) is None  # off its source's grid
    for x, _, doc in [b for _, b in zip(range(30), loader)]:
        assert doc.cu_seqlens[-1] == x.numel()
