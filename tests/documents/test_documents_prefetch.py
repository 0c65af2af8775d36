"""CUDAPrefetcher carries ``doc`` along with the compact tokens (issue 13, item 7), on the CPU path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import streamtok
from streamtok._formats import write_shard


@pytest.fixture
def docs_dir(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(2):
        tokens = rng.integers(0, 50000, 20_000).astype(np.uint16)
        tokens[rng.choice(20_000, 150, replace=False)] = 50256  # document starts
        tokens[0] = 50256
        write_shard(tmp_path / f"docs_{k:06d}.bin", tokens)
    return tmp_path


def _same(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a[:2], b[:2])) and all(
        torch.equal(getattr(a[2], f), getattr(b[2], f)) for f in ("position_ids", "cu_seqlens")
    ) and a[2].max_seqlen == b[2].max_seqlen


@pytest.mark.parametrize("documents", ["mask", "pack"])
@pytest.mark.parametrize("workers", [0, 2])
def test_prefetcher_yields_the_loaders_x_y_doc(docs_dir, documents, workers):
    kw = dict(seq_len=64, batch_size=4, split="all", documents=documents, seed=1, metrics=False)
    plain = list(streamtok.loader(docs_dir, **kw))
    staged = list(streamtok.CUDAPrefetcher(streamtok.loader(docs_dir, num_workers=workers, **kw), "cpu"))
    assert len(staged) == len(plain) > 10
    assert all(len(b) == 3 and _same(a, b) for a, b in zip(plain, staged))
    half = streamtok.CUDAPrefetcher(streamtok.loader(docs_dir, num_workers=workers, **kw), "cpu")
    it = iter(half)
    for _ in range(5):
        next(it)
    state = half.state_dict()
    it.close()
    resumed = streamtok.CUDAPrefetcher(streamtok.loader(docs_dir, **kw), "cpu")
    resumed.load_state_dict(state)
    assert all(_same(a, b) for a, b in zip(plain[5:], list(resumed)))
