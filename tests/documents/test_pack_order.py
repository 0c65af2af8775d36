"""The packed order stays the pure function the README states, whatever makes it fast.

The sampler keeps blocks as arrays, computes the document order for groups of blocks, packs
with a compiled loop (or the Python one without numba) and builds a chunk of steps' ``doc`` at
once; each is checked here against a plain reference: the best fit written as lists of
``(length, position)`` tuples, blocks packed one by one, boundaries built per step.
"""

import bisect
import subprocess
import sys

import numpy as np
import pytest
from _util import make_doc_shards

from streamtok import ConfigError
from streamtok.documents import bestfit
from streamtok.documents.collate import document_collator, packed_documents
from streamtok.documents.samplers import document_order, pack_block
from streamtok.reader import MemmapReader


def reference_pack(lengths, cap):
    """Best fit, plainly: the longest that fits what is left, else the shortest cropped."""
    rows, first = [], []
    pool = sorted((int(n), i) for i, n in enumerate(lengths.tolist()) if n < cap)
    for i, n in enumerate(lengths.tolist()):
        if n >= cap:
            rows.append([(i, cap)])
            first.append(i)
    sizes = [n for n, _ in pool]
    while pool:
        row, left = [], cap
        while left and pool:
            j = bisect.bisect_right(sizes, left) - 1
            j, take = (0, left) if j < 0 else (j, sizes[j])
            row.append((pool[j][1], take))
            del pool[j], sizes[j]
            left -= take
        if left == 0:
            rows.append(row)
            first.append(row[0][0])
    return [rows[r] for r in sorted(range(len(rows)), key=first.__getitem__)]


def test_pack_block_is_the_plain_best_fit():
    rng = np.random.default_rng(7)
    for trial in range(400):
        cap = int(rng.integers(1, 200))
        n = int(rng.integers(0, 120))
        if trial % 3 == 0:  # many equal lengths: ties go to the latest in the block
            lengths = rng.integers(1, 12, n)
        else:
            lengths = np.maximum(1, rng.lognormal(np.log(rng.integers(2, 150)), rng.uniform(0.2, 1.8), n)).astype(np.int64)
        assert pack_block(lengths, cap) == reference_pack(lengths, cap), (cap, lengths.tolist())


def random_blocks(seed, n_blocks):
    """Blocks of lengths with many ties, lengths around cap, and log-normal ones."""
    rng = np.random.default_rng(seed)
    for trial in range(n_blocks):
        cap = int(rng.integers(1, 300))
        n = int(rng.integers(0, 200))
        if trial % 3 == 0:
            lengths = rng.integers(1, 12, n)
        elif trial % 3 == 1:
            lengths = rng.integers(1, 2 * cap + 2, n)
        else:
            lengths = np.maximum(1, rng.lognormal(np.log(rng.integers(2, 150)), rng.uniform(0.2, 1.8), n)).astype(np.int64)
        yield lengths, cap


def test_the_compiled_packer_gives_the_python_loops_arrays():
    assert bestfit.compiled(), "numba is a requirement: the packer should run compiled here"
    for lengths, cap in random_blocks(11, 3000):
        got = bestfit.packed_pieces(lengths, cap)
        want = bestfit.packed_pieces_python(lengths, cap)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype == np.int64 and np.array_equal(a, b), (cap, lengths.tolist())
    # A block of a real size, in every dtype a document index hands over.
    lengths = np.maximum(1, np.random.default_rng(0).lognormal(np.log(600), 1.0, 1000)).astype(np.int32)
    for cap in (1025, 2049, 8193):
        assert all(np.array_equal(a, b) for a, b in zip(bestfit.packed_pieces(lengths, cap),
                                                         bestfit.packed_pieces_python(lengths, cap)))


_ROWS_IN_A_PROCESS = """
import hashlib, sys
import numpy as np
{prelude}
from streamtok import ConfigError
from streamtok.documents import bestfit
digest = hashlib.sha256()
rng = np.random.default_rng(5)
for _ in range(300):
    cap = int(rng.integers(2, 400))
    lengths = np.maximum(1, rng.lognormal(np.log(cap / 2), 1.0, int(rng.integers(0, 300)))).astype(np.int64)
    for part in bestfit.packed_pieces(lengths, cap):
        digest.update(part.tobytes())
print(bestfit.compiled(), digest.hexdigest())
"""


@pytest.mark.parametrize("how", ["STREAMTOK_NUMBA=0", "numba unimportable"])
def test_without_numba_the_python_loop_packs_the_same_rows(how):
    def rows_in_a_process(prelude="", **env):
        import os

        out = subprocess.run([sys.executable, "-c", _ROWS_IN_A_PROCESS.format(prelude=prelude)], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **env}, check=True).stdout.split()
        return out[0] == "True", out[1]

    compiled, want = rows_in_a_process()
    if how == "STREAMTOK_NUMBA=0":
        slow, got = rows_in_a_process(STREAMTOK_NUMBA="0")
    else:
        slow, got = rows_in_a_process(prelude="sys.modules['numba'] = None  # import numba raises ImportError")
    assert compiled and not slow
    assert got == want


def test_a_numba_that_cannot_compile_leaves_the_python_loop_with_one_warning(monkeypatch):
    numba = pytest.importorskip("numba")

    def broken(*args, **kwargs):
        raise ValueError("no LLVM target here")

    monkeypatch.setattr(numba, "njit", broken)
    monkeypatch.setattr(bestfit, "_compiled", bestfit._UNSET)  # built again on first use, then restored
    lengths = np.array([5, 9, 3, 12, 7, 1, 30])
    with pytest.warns(RuntimeWarning, match="could not compile the best-fit packer.*no LLVM target"):
        got = bestfit.packed_pieces(lengths, 13)
    assert not bestfit.compiled()
    assert all(np.array_equal(a, b) for a, b in zip(got, bestfit.packed_pieces_python(lengths, 13)))


@pytest.fixture(scope="module")
def many_docs(tmp_path_factory):
    path = tmp_path_factory.mktemp("many")
    make_doc_shards(path, n_shards=2, docs=260, median=12)
    return path


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
def test_sampler_plans_are_the_blocks_packed_one_by_one(many_docs, mode):
    T, B, W, block_docs = 24, 3, 2, 5  # 104 blocks: steps cross blocks, order groups of 16 blocks
    reader = MemmapReader(many_docs)
    collators = [
        document_collator(reader, documents="pack", bos_id=None, seq_len=T, batch_size=B, block_docs=block_docs,
                          collate_kw={}, mode=mode, seed=3, epochs=2, rank=r, world_size=W)
        for r in range(W)
    ]
    sampler = collators[0].sampler
    index, n = sampler.index, sampler.n_samples
    expect = []
    for epoch in range(2):
        rows = []
        for lo in range(0, n, block_docs):
            docs = document_order(mode, 3, epoch, np.arange(lo, min(lo + block_docs, n)), n)
            starts, lengths = index.starts(docs), index.lengths(docs)
            rows += [[(int(starts[i]), t) for i, t in row] for row in reference_pack(lengths, T + 1)]
        expect += [rows[s : s + B * W] for s in range(0, len(rows) - B * W + 1, B * W)]
    for rank, collator in enumerate(collators):
        plans = list(collator.sampler.iter_steps(collator.sampler.next_pass()))
        assert len(plans) == len(expect)
        for plan, step in zip(plans, expect):
            mine = step[rank * B : (rank + 1) * B]
            assert plan.tolist() == [[r, s, t] for r, row in enumerate(mine) for s, t in row]
    # A position reached by advance() and saved gives the steps that follow it in the walk.
    first = list(collators[0].sampler.iter_steps(collators[0].sampler.next_pass()))
    per_epoch = len(first) // 2
    for skip in (1, 20, per_epoch - 1, per_epoch):
        moved = document_collator(reader, documents="pack", bos_id=None, seq_len=T, batch_size=B, block_docs=block_docs,
                                  collate_kw={}, mode=mode, seed=3, epochs=2, rank=0, world_size=W).sampler
        moved.begin_pass()
        for _ in range(skip):
            moved.advance()
        sampler.load_state_dict(moved.state_dict())
        again = sampler.iter_steps(sampler.next_pass())
        assert [next(again).tolist() for _ in range(2)] == [p.tolist() for p in first[skip : skip + 2]]


def test_a_chunk_of_packed_docs_is_each_step_built_alone(many_docs):
    T, B = 24, 3
    collator = document_collator(MemmapReader(many_docs), documents="pack", bos_id=None, seq_len=T, batch_size=B,
                                 block_docs=7, collate_kw={}, seed=1, epochs=1)
    plans = list(collator.sampler.iter_steps(collator.sampler.next_pass()))[:70]
    chunk = packed_documents(plans, B, T)
    assert len(chunk) == len(plans)
    for plan, doc in zip(plans, chunk):
        rows, lengths = plan[:, 0], plan[:, 2]
        col = np.cumsum(lengths) - lengths - rows * (T + 1)  # where each piece begins in its row
        segs = [(r, c) for r, c in zip(rows.tolist(), col.tolist()) if c < T]  # begins at T: target only
        cu = [r * T + c for r, c in segs] + [B * T]
        assert doc.cu_seqlens.tolist() == cu
        assert doc.max_seqlen == max(b - a for a, b in zip(cu, cu[1:]))
        assert doc.position_ids.shape == (B, T) and doc.position_ids[:, 0].tolist() == [0] * B


def test_plans_are_read_only(many_docs):
    collator = document_collator(MemmapReader(many_docs), documents="pack", bos_id=None, seq_len=24, batch_size=3,
                                 block_docs=7, collate_kw={}, seed=1, epochs=1)
    sampler = collator.sampler
    plan = next(sampler.iter_steps(sampler.next_pass()))  # the remembered step's own array
    with pytest.raises(ValueError, match="read-only"):
        plan[0, 1] += 1
    assert next(sampler.iter_steps(sampler.next_pass())).tolist() == plan.tolist()


@pytest.mark.parametrize("n_shards", [3, 20])  # up to 16 shards: compared; more: a radix sort groups them
def test_index_starts_of_ids_in_any_order_are_the_plain_concatenation(tmp_path, n_shards, monkeypatch):
    from _util import BOS

    from streamtok._formats import write_shard
    from streamtok.documents.index import DocumentIndex

    rng = np.random.default_rng(n_shards)
    every = []
    pos = 0
    for k in range(n_shards):
        tokens = rng.integers(0, 50000, int(rng.integers(5, 80))).astype(np.uint16)
        if k % 4 != 1:  # every fourth shard holds no document start at all
            at = np.unique(rng.integers(0, len(tokens), int(rng.integers(1, 6))))
            tokens[at] = BOS
            every += (at + pos).tolist()
        write_shard(tmp_path / f"s_{k:03d}.bin", tokens)
        pos += len(tokens)
    index = DocumentIndex(MemmapReader(tmp_path))
    every = np.array(every, dtype=np.int64)
    assert index.n_documents == len(every)
    for shape in [(1,), (500,), (25, 4)]:
        ids = rng.integers(0, len(every), shape)
        assert np.array_equal(index.starts(ids), every[ids])
    ids = np.arange(len(every))[::-1]  # descending, every shard touched
    assert np.array_equal(index.starts(ids), every[ids]) and index.starts(np.zeros(0, dtype=np.int64)).shape == (0,)
    assert np.array_equal(index.starts(np.full(7, 3)), every[np.full(7, 3)])  # one shard only


def test_a_later_epoch_that_cannot_fill_a_step_fails_after_the_steps_before_it(many_docs, monkeypatch):
    # Plans are made a chunk at a time; an epoch that cannot fill a step (its packed rows vary
    # by epoch) must still come after every step before it, as when they were made one by one.
    def collator(epochs):
        return document_collator(MemmapReader(many_docs), documents="pack", bos_id=None, seq_len=24, batch_size=3,
                                 block_docs=5, collate_kw={}, seed=2, epochs=epochs)

    one_epoch = list(collator(1).sampler.iter_steps(collator(1).sampler.next_pass()))
    assert 0 < len(one_epoch) % 64  # the failure falls inside a chunk
    sampler = collator(None).sampler
    take = sampler._take
    monkeypatch.setattr(sampler, "_take", lambda epoch, *a: None if epoch >= 1 else take(epoch, *a))
    got = []
    with pytest.raises(ConfigError, match="cannot fill one global step"):
        for plan in sampler.iter_steps(sampler.next_pass()):
            got.append(plan.tolist())
    assert got == [p.tolist() for p in one_epoch]
