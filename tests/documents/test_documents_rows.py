"""PackedRowIndex: a source's packed rows numbered across epochs, found from any mark."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _util import make_doc_shards

from streamtok import MemmapReader, StateMismatchError
from streamtok.documents.index import DocumentIndex
from streamtok.documents.rows import PackedRowIndex

BOS = 50256


@pytest.fixture(scope="module")
def rows_factory(tmp_path_factory):
    path = tmp_path_factory.mktemp("rows")
    make_doc_shards(path, n_shards=2, docs=40, median=8)
    reader = MemmapReader(path)
    index = DocumentIndex(reader, BOS)
    return lambda: PackedRowIndex(reader, 15, index=index, mode="shuffle", seed=4, block_docs=16)


def test_rows_run_on_across_epochs_block_by_block(rows_factory):
    p = rows_factory()
    e1 = p.epoch_start(1)
    assert 0 < e1 <= p.n_samples and p.epoch_of(e1 - 1) == 0 and p.epoch_of(e1) == 1
    packer = p.packer
    epoch0 = [row for b in range(p.n_blocks) for row in packer.block_rows(0, b)]
    epoch1 = [row for b in range(p.n_blocks) for row in packer.block_rows(1, b)]
    assert p.rows(list(range(e1 + len(epoch1)))) == epoch0 + epoch1
    assert p.rows([e1 + 2, 3, e1]) == [epoch1[2], epoch0[3], epoch1[0]]  # any order asked


def _as_rows(pieces, n):
    out = [[] for _ in range(n)]
    for i, start, tokens in pieces.tolist():
        out[i].append((start, tokens))
    return out


def test_row_pieces_are_rows_as_arrays_in_any_order_and_from_a_mark(rows_factory):
    p = rows_factory()
    rng = np.random.default_rng(0)
    e2 = p.epoch_start(2)
    for ks in (rng.permutation(e2)[:40], rng.integers(0, e2, 25), np.array([e2 - 1, 0, 5, 5]), np.array([], dtype=np.int64)):
        got = p.row_pieces(ks)
        assert got.dtype == np.int64 and got.shape[1] == 3 and np.all(np.diff(got[:, 0]) >= 0)
        assert _as_rows(got, len(ks)) == p.rows(ks.tolist())
    resumed = rows_factory()
    mark = p.mark(60)
    resumed.reset(*mark)
    ks = np.array([70, 61, 3, 90])  # after the mark and before it
    assert _as_rows(resumed.row_pieces(ks), 4) == p.rows(ks.tolist())


def test_a_mark_gives_the_same_rows_forward_and_back(rows_factory):
    full = rows_factory()
    want = full.rows(list(range(120)))
    mark = full.mark(90)
    assert mark[0] <= 90 and mark != (0, 0, 0)
    resumed = pickle.loads(pickle.dumps(rows_factory()))  # as a worker receives it
    resumed.reset(*mark)
    assert resumed.rows(list(range(90, 120))) == want[90:]
    assert resumed.mark(90) == mark  # started at the mark: nothing before it packed
    assert resumed.rows(list(range(0, 20))) == want[:20]  # back to the run's start
    assert resumed.epoch_start(1) == full.epoch_start(1)


def test_a_mark_of_other_data_is_refused(rows_factory):
    p = rows_factory()
    p.reset(2, 3, 0)  # 2 rows before epoch 3: too few for three epochs
    with pytest.raises(StateMismatchError, match="mark"):
        p.rows([0])
