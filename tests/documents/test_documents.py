"""The document index (sidecars, cache, stats) and the boundaries of "mask", "bos" and "pack" rows."""

import json
import os
import re

import numpy as np
import pytest
import torch
from _util import BOS, make_doc_shards

import streamtok
from streamtok._formats import probe_shard, write_shard
from streamtok.documents import sidecar as documents_module
from streamtok.documents.samplers import pack_block
from streamtok.documents.sidecar import (
    default_bos_id,
    document_starts,
    document_stats,
    scan_document_starts,
    sidecar_paths,
    write_document_index,
)
from streamtok.errors import ConfigError

T, B = 32, 4


@pytest.fixture
def doc_dir(tmp_path):
    path = tmp_path / "docs"
    path.mkdir()
    tokens, starts = make_doc_shards(path)
    return path, tokens, starts


# -- the index ------------------------------------------------------------------------------


def test_scan_finds_every_boundary_and_the_sidecar_is_reused(doc_dir, monkeypatch):
    path, tokens, starts = doc_dir
    shard = str(path / "docs_001.bin")
    info = probe_shard(shard)
    local = np.memmap(shard, np.uint16, "r", info.offset)
    assert np.array_equal(scan_document_starts(shard, BOS), np.flatnonzero(local == BOS))
    first = np.asarray(document_starts(shard, bos_id=BOS))
    beside, _ = sidecar_paths(shard)
    assert beside.exists() and beside.name == "docs_001.bin.docidx"
    monkeypatch.setattr(documents_module, "scan_document_starts", lambda *a, **k: pytest.fail("rescanned"))
    assert np.array_equal(document_starts(shard, bos_id=BOS), first)


def test_sidecar_is_rebuilt_when_the_shard_changes(tmp_path):
    shard = tmp_path / "one.bin"
    write_shard(shard, np.array([BOS, 1, 2, BOS, 3], dtype=np.uint16))
    assert document_starts(shard).tolist() == [0, 3]
    write_shard(shard, np.array([BOS, 1, BOS, BOS, 3], dtype=np.uint16))  # same size, new content
    assert document_starts(shard).tolist() == [0, 2, 3]
    assert document_starts(shard, bos_id=1).tolist() == [1]  # another boundary token: another index


def test_read_only_directory_uses_the_cache_dir(tmp_path, monkeypatch):
    shard = tmp_path / "ro" / "one.bin"
    write_shard(shard, np.array([BOS, 1, 2, BOS, 3, BOS], dtype=np.uint16))
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    real_access = os.access
    monkeypatch.setattr(documents_module.os, "access", lambda p, m: False if str(p) == str(shard.parent) else real_access(p, m))
    written = write_document_index(shard)
    assert written.parent == tmp_path / "cache" and not sidecar_paths(shard)[0].exists()
    assert document_starts(shard).tolist() == [0, 3, 5]


def test_default_bos_ids(tmp_path):
    write_shard(tmp_path / "a.bin", np.array([1, 2], dtype=np.uint16))
    write_shard(tmp_path / "b.bin", np.array([1, 2], dtype=np.uint32))
    write_shard(tmp_path / "c.npy", np.array([1, 2], dtype=np.uint16))
    write_shard(tmp_path / "d.npy", np.array([1, 2], dtype=np.int32))
    assert default_bos_id(probe_shard(tmp_path / "a.bin")) == 50256
    assert default_bos_id(probe_shard(tmp_path / "b.bin")) == 128000
    assert default_bos_id(probe_shard(tmp_path / "c.npy")) == 50256
    with pytest.raises(ConfigError, match="pass bos_id"):
        default_bos_id(probe_shard(tmp_path / "d.npy"))


def test_document_stats(tmp_path):
    shard = tmp_path / "s.bin"
    lengths = [5, 10, 20, 40, 100]
    write_shard(shard, np.concatenate([np.r_[BOS, np.ones(n - 1)].astype(np.uint16) for n in lengths]))
    stats = document_stats(shard)
    assert (stats.n_documents, stats.median, stats.max) == (5, 20.0, 100)
    assert stats.p90 == pytest.approx(np.percentile(lengths, 90))


def test_sidecars_are_not_read_as_shards(doc_dir):
    path, tokens, _ = doc_dir
    list(streamtok.loader(path, seq_len=T, batch_size=B, split="all", documents="mask", metrics=False))
    assert any(n.endswith(".docidx") for n in os.listdir(path))
    assert streamtok.MemmapReader(path).n_tokens == len(tokens)


# -- boundaries, row by row ------------------------------------------------------------------


def segment_starts(doc):
    """Per row, the columns where position_ids restart."""
    pid = doc.position_ids.numpy()
    return [set(np.flatnonzero(row == 0).tolist()) for row in pid]


def check_doc(x, doc):
    cu = doc.cu_seqlens
    assert cu.dtype == torch.int32 and int(cu[0]) == 0 and int(cu[-1]) == x.numel()
    assert bool((cu[1:] > cu[:-1]).all())
    assert doc.position_ids.dtype == torch.int64 and doc.position_ids.shape == x.shape
    assert doc.max_seqlen == int((cu[1:] - cu[:-1]).max())
    flat = doc.position_ids.reshape(-1).numpy()
    assert set(np.flatnonzero(flat == 0).tolist()) == set(cu[:-1].tolist())
    assert np.all(np.diff(flat)[flat[1:] != 0] == 1)  # counts up inside a segment


def locate_rows(x, tokens):
    """Global start of each row (rows are windows of the data: found by their content)."""
    view = np.lib.stride_tricks.sliding_window_view(tokens, x.shape[1])
    out = []
    for row in x.numpy():
        hits = np.flatnonzero((view == row).all(axis=1))
        assert len(hits) == 1
        out.append(int(hits[0]))
    return out


@pytest.mark.parametrize("documents", ["mask", "bos"])
def test_window_rows_restart_at_every_document_start(doc_dir, documents):
    path, tokens, starts = doc_dir
    doc_set = set(starts.tolist())
    seen = []
    for x, y, doc in streamtok.loader(path, seq_len=T, batch_size=B, split="all", documents=documents, metrics=False):
        check_doc(x, doc)
        for r, (s, restarts) in enumerate(zip(locate_rows(x, tokens), segment_starts(doc))):
            assert restarts == {0} | {c for c in range(T) if s + c in doc_set}
            assert np.array_equal(y[r].numpy(), tokens[s + 1 : s + T + 1])
            seen.append(s)
        if documents == "bos":
            assert bool((x[:, 0] == BOS).all())
    if documents == "bos":  # shuffle: every usable document start exactly once per epoch
        usable = [s for s in starts.tolist() if s + T + 1 <= len(tokens)]
        assert len(seen) == len(set(seen)) == len(usable) // B * B and set(seen) <= set(usable)


@pytest.mark.parametrize("mixture", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_each_batch_gets_its_own_doc_in_every_mode_and_pass(tmp_path, documents, workers, mixture):
    # A batch's doc is made beside it: from the sampler's record without workers, from a second
    # walk of the order with them. Whichever way, over more than one chunk of steps and a second
    # pass, its segments start exactly where the batch's own rows hold BOS (and at column 0).
    if mixture:
        source = {}
        for name, seed in (("a", 1), ("b", 2), ("c", 3)):
            make_doc_shards(tmp_path / name, n_shards=2, docs=100, seed=seed)
            source[name] = tmp_path / name
        kw = {"weights": {"a": 0.5, "b": 0.3, "c": 0.2}, "primary": "a", "epochs": 1}
    else:
        make_doc_shards(tmp_path, n_shards=3, docs=100, seed=1)
        source, kw = tmp_path, {"epochs": 1}
    loader = streamtok.loader(source, seq_len=16, batch_size=3, split="all", documents=documents, num_workers=workers,
                              metrics=False, **kw)
    for _ in range(2):
        steps = 0
        for x, y, doc in loader:
            for row, restarts in zip(x.numpy(), segment_starts(doc)):
                assert restarts == {0} | set(np.flatnonzero(row == BOS).tolist())
            steps += 1
        assert steps > 64  # more than one chunk of steps a pass


def test_mask_keeps_the_windows_and_the_state_of_stream(doc_dir):
    path, _, _ = doc_dir
    kw = {"seq_len": T, "batch_size": B, "split": "all", "metrics": False, "seed": 3}
    stream = list(streamtok.loader(path, **kw))
    mask = streamtok.loader(path, documents="mask", **kw)
    for (x0, y0), (x1, y1, _) in zip(stream, mask):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert len(stream) == len(mask)
    half = streamtok.loader(path, **kw)
    take = [b for _, b in zip(range(5), half)]
    resumed = streamtok.loader(path, documents="mask", **kw)
    resumed.load_state_dict(json.loads(json.dumps(half.state_dict())))  # a "stream" checkpoint
    assert torch.equal(next(iter(resumed))[0], stream[len(take)][0])


def test_pack_rows_are_whole_documents_from_bos(doc_dir):
    path, tokens, starts = doc_dir
    ends = dict(zip(starts.tolist(), [*starts[1:].tolist(), len(tokens)]))
    by_content = {}
    for s, e in ends.items():
        by_content.setdefault(tokens[s:e].tobytes(), []).append(e - s)
    used = cropped = 0
    for x, y, doc in streamtok.loader(path, seq_len=T, batch_size=B, split="all", documents="pack", block_docs=40, metrics=False):
        check_doc(x, doc)
        assert bool((x[:, 0] == BOS).all())
        for r, restarts in enumerate(segment_starts(doc)):
            row = np.concatenate([x[r].numpy(), y[r, -1:].numpy()]).astype(np.uint16)
            cols = sorted(restarts) + [T + 1]
            assert set(np.flatnonzero(row[:T] == BOS).tolist()) == restarts
            for a, b in zip(cols[:-1], cols[1:]):
                piece = row[a:b]
                whole = piece.tobytes() in by_content
                if not whole:  # a cropped document: only the row's last piece, a prefix of a document
                    cropped += 1
                    assert b == T + 1 and any(tokens[s : s + len(piece)].tobytes() == piece.tobytes() for s in ends)
            used += 1
    assert used > 0 and 0 < cropped < used


def test_pack_reads_each_document_at_most_once_per_epoch_over_ranks(doc_dir):
    path, _, starts = doc_dir
    seen = []
    for rank in (0, 1):
        loader = streamtok.loader(path, seq_len=T, batch_size=2, split="all", documents="pack", rank=rank, world_size=2, block_docs=25, metrics=False)
        sampler = loader.collator.source
        seen += [s for plan in sampler.iter_steps(sampler.next_pass()) for s in plan[:, 1].tolist()]
    assert len(seen) == len(set(seen)) and set(seen) <= set(starts.tolist())
    assert len(seen) > len(starts) // 2  # most documents are used


def test_packed_pieces_across_shard_ends_are_stitched(tmp_path):
    tokens, _ = make_doc_shards(tmp_path, n_shards=8, docs=6, median=8, lead=12, lead_all=True)
    loader = streamtok.loader(tmp_path, seq_len=T, batch_size=2, split="all", documents="pack", block_docs=40, metrics=False)
    collator, crossing = loader.collator, 0
    ends = collator.reader.offsets[1:]
    for plan in collator.sampler.iter_steps(collator.sampler.next_pass()):
        buf = collator.gather(plan).numpy()
        expect = np.concatenate([tokens[s : s + n] for _, s, n in plan.tolist()]).reshape(2, T + 1)
        assert np.array_equal(buf, expect)
        crossing += int(sum(any(s < e < s + n for e in ends) for _, s, n in plan.tolist()))
    assert crossing > 0


def test_pack_block_crops_only_when_nothing_fits():
    rng = np.random.default_rng(1)
    cap = 65
    for _ in range(30):
        lengths = (1 + rng.lognormal(np.log(25), 1.0, 50)).astype(np.int64)
        rows = pack_block(lengths, cap)
        used = [i for row in rows for i, _ in row]
        assert len(used) == len(set(used))
        unused = set(range(len(lengths))) - set(used)
        for row in rows:
            assert sum(n for _, n in row) == cap
            for pos, (i, n) in enumerate(row):
                if n < lengths[i]:  # cropped: last in its row, and no unused document fit the gap
                    assert pos == len(row) - 1
                    assert all(lengths[j] > n for j in unused) or lengths[i] >= cap
            if any(lengths[i] >= cap for i, _ in row):
                assert len(row) == 1
    # 30 first, then the shortest cropped to the last token; 20 alone cannot fill a row: dropped
    assert pack_block(np.array([10, 20, 30]), 31) == [[(2, 30), (0, 1)]]
    # a long document fills a row by itself; rows keep the block order of their first document
    assert pack_block(np.array([40, 10, 21]), 31) == [[(0, 31)], [(2, 21), (1, 10)]]


def test_position_ids_on_other_devices_match(doc_dir):
    from streamtok.documents.index import _position_ids_torch

    path, _, _ = doc_dir
    for x, y, doc in streamtok.loader(path, seq_len=T, batch_size=B, split="all", documents="mask", metrics=False):
        assert torch.equal(_position_ids_torch(doc.cu_seqlens, B, T), doc.position_ids)
        moved = type(doc)(doc)  # what a prefetcher's tuple move makes: position ids made anew
        assert torch.equal(moved.position_ids, doc.position_ids) and moved.max_seqlen == doc.max_seqlen


def test_pack_collator_alone_and_vocab_check_names_the_token(doc_dir):
    path, tokens, _ = doc_dir
    kw = {"seq_len": T, "batch_size": B, "split": "all", "documents": "pack", "metrics": False}
    collator = streamtok.loader(path, **kw).collator
    x, y, doc = next(iter(collator))  # the collator iterates its sampler without a DataLoader
    assert torch.equal(x, next(iter(streamtok.loader(path, **kw)))[0])
    plan = next(collator.sampler.iter_steps(collator.sampler.next_pass()))
    buf = collator.gather(plan).numpy()
    top = int(buf.max())
    checked = type(collator)(collator.sampler, index=collator.index, documents="pack", vocab_size=top)
    with pytest.raises(streamtok.TokenRangeError) as err:
        checked.gather(plan)
    shard, offset = re.search(r"(docs_\d+\.bin): token \d+ at token offset (\d+)", str(err.value)).groups()
    assert np.memmap(path / shard, np.uint16, "r", 1024)[int(offset)] == top


@pytest.mark.parametrize("bad", [-7, 600])
@pytest.mark.parametrize("documents", ["stream", "mask", "bos", "pack"])
def test_every_mode_checks_both_ends_of_vocab_size(tmp_path, documents, bad):
    """pack checked only the maximum (negative ids went out) and named the wrong offset inside a row."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 500, 6000).astype(np.int32)
    tokens[::23] = 1  # documents of 23 tokens: the bad token is 5 into one, inside a packed row
    tokens[23 * 53 + 5] = bad
    np.save(tmp_path / "train.npy", tokens)
    kw = {} if documents == "stream" else {"bos_id": 1}
    loader = streamtok.loader(
        tmp_path, seq_len=30, batch_size=4, split="all", mode="sequential", vocab_size=500,
        documents=documents, metrics=False, **kw,
    )
    what = "is negative" if bad < 0 else "is not below vocab_size 500"
    with pytest.raises(streamtok.TokenRangeError, match=rf"train\.npy: token {bad} at token offset {23 * 53 + 5} {what}"):
        list(loader)


def _long_documents(path, doc_len=3200, n=100_000, bos=1):
    tokens = np.random.default_rng(0).integers(2, 500, n).astype(np.uint16)
    tokens[::doc_len] = bos
    np.save(path / "train.npy", tokens)
    return n // doc_len + (n % doc_len > 0)


def _warnings_of(make):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = make()
        for _ in range(2):
            list(loader)
    return [str(w.message) for w in caught if "streamtok" in str(w.message)]


def test_mask_with_a_bos_id_that_never_occurs_warns_once(tmp_path):
    """It gave batches without a boundary and no word (bos and pack refuse)."""
    _long_documents(tmp_path)
    make = lambda: streamtok.loader(tmp_path, seq_len=T, batch_size=B, split="all", documents="mask", bos_id=999, metrics=False)  # noqa: E731
    got = _warnings_of(make)
    assert len(got) == 1 and "found 0 document starts (bos_id=999) in the 100000 tokens" in got[0]
    assert _warnings_of(lambda: streamtok.loader(tmp_path, seq_len=T, batch_size=B, split="all", documents="mask", bos_id=1, metrics=False)) == []
    for documents in ("bos", "pack"):
        with pytest.raises(ConfigError, match="bos_id"):
            streamtok.loader(tmp_path, seq_len=T, batch_size=B, split="all", documents=documents, bos_id=999, metrics=False)


@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_rows_of_long_documents_warn_once_with_the_share_an_epoch_skips(tmp_path, documents):
    """bos and pack read a document's first T+1 tokens only: 33 of each 3200 here, silently."""
    n_docs = _long_documents(tmp_path)
    make = lambda: streamtok.loader(tmp_path, seq_len=T, batch_size=B, split="all", documents=documents, bos_id=1, metrics=False)  # noqa: E731
    got = _warnings_of(make)
    assert len(got) == 1, got
    read = sum(x.numel() + B for x, _, _ in make())  # tokens an epoch reads: B rows of T+1 a step
    share = 1 - read / 100_000
    assert share > 0.98
    bound = "at least " if documents == "pack" else ""
    assert f"{n_docs} of the {n_docs} documents" in got[0]
    if documents == "bos":  # exact: every usable row read once an epoch (here, all 32 full steps' rows)
        assert f"skips {share:.1%} of its 100000 tokens" in got[0]
    else:  # a lower bound: what the packer drops besides the tails comes on top
        stated = float(re.search(r"skips at least ([\d.]+)%", got[0]).group(1)) / 100
        assert stated <= share + 0.0005
    assert bound + "9" in got[0].split("skips ")[1][:12]


def test_the_skipped_share_of_a_big_index_is_estimated_from_a_sample(doc_dir, monkeypatch):
    from streamtok.documents import samplers as packing
    from streamtok.documents.index import DocumentIndex
    from streamtok.reader import MemmapReader

    path, tokens, starts = doc_dir
    index = DocumentIndex(MemmapReader(path), None)
    ends = np.append(starts[1:], len(tokens))
    exact = 1 - np.minimum(ends - starts, 17).sum() / len(tokens)
    assert packing.skipped_share(index, 17, "pack") == (pytest.approx(exact), int((ends - starts > 17).sum()))
    monkeypatch.setattr(packing, "_COVERAGE_EXACT", 10)
    monkeypatch.setattr(packing, "_COVERAGE_SAMPLE", 90)
    share, long_docs = packing.skipped_share(index, 17, "pack")
    assert abs(share - exact) < 0.05 and abs(long_docs - (ends - starts > 17).sum()) < 15


def test_short_documents_warn_nothing(doc_dir):
    path, _, _ = doc_dir
    for documents in ("bos", "pack"):  # documents of ~20 tokens and rows of 1025: nothing skipped but the ends
        make = lambda: streamtok.loader(path, seq_len=1024, batch_size=1, split="all", documents=documents, epochs=1, metrics=False)  # noqa: E731
        assert _warnings_of(make) == []


def test_bad_documents_settings(doc_dir):
    path, _, _ = doc_dir
    with pytest.raises(ConfigError, match="documents must be one of"):
        streamtok.loader(path, seq_len=T, batch_size=B, documents="docs", metrics=False)
    with pytest.raises(ConfigError, match="bos_id"):
        streamtok.loader(path, seq_len=T, batch_size=B, documents="bos", bos_id=7, split="all", metrics=False)
    with pytest.raises(ConfigError, match="take effect only with documents="):
        streamtok.loader(path, seq_len=T, batch_size=B, bos_id=BOS, metrics=False)
    with pytest.raises(ConfigError, match="block_docs"):
        streamtok.loader(path, seq_len=T, batch_size=B, documents="mask", block_docs=10, metrics=False)


def test_sorted_with_order_is_a_stable_argsort():
    from streamtok.documents.index import _sorted_with_order

    rng = np.random.default_rng(2)
    for n, top in ((1, 5), (7, 3), (2048, 10), (2048, 1 << 40), (3000, 1 << 50), (5, 1 << 62)):
        values = rng.integers(0, top, n)  # small tops: many ties, kept in index order
        order, ordered = _sorted_with_order(values)
        expect = np.argsort(values, kind="stable")
        assert np.array_equal(order, expect) and np.array_equal(ordered, values[expect])


def test_batch_documents_of_repeated_and_unsorted_rows(doc_dir):
    from streamtok.documents.index import DocumentIndex

    path, tokens, starts = doc_dir
    index = DocumentIndex(streamtok.MemmapReader(path))
    rng = np.random.default_rng(5)
    rows = rng.integers(0, len(tokens) - T, 6 * B)
    rows[3], rows[B + 1] = rows[0], rows[0]  # the same window twice, in two batches
    doc_set = set(starts.tolist())
    for b, doc in enumerate(index.batch_documents(rows, T, B)):
        cu = []
        for r, s in enumerate(rows[b * B : (b + 1) * B].tolist()):
            cu += [r * T] + [r * T + c for c in range(1, T) if s + c in doc_set]
        assert doc.cu_seqlens.tolist() == cu + [B * T]
        assert doc.max_seqlen == max(np.diff(cu + [B * T]))
