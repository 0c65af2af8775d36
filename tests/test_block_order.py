"""block_shuffle: a bijection per epoch, local to pools of blocks, a pure function of (seed, epoch, k)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streamtok._order import BlockLocalPermutation, WindowOrder


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2000), group=st.integers(1, 50), pool=st.integers(1, 9), key=st.integers(0, 2**32))
def test_a_bijection_whose_pools_hold_their_groups(n, group, pool, key):
    assume(n // (group * pool) <= 40)  # each pool costs a permutation's set-up: keep the test fast
    perm = BlockLocalPermutation(n, group, pool, key)
    k = np.arange(n)
    out = perm(k)
    assert np.array_equal(np.sort(out), k)
    # every stretch of group*pool samples reads at most `pool` groups
    for p in range(0, n, group * pool):
        assert len(np.unique(out[p : p + group * pool] // group)) <= pool
    # pointwise evaluation (any subset, any order) agrees with the whole
    pick = np.random.default_rng(key).permutation(n)[: max(1, n // 3)]
    assert np.array_equal(perm(pick), out[pick])


def test_order_depends_on_seed_and_epoch_only():
    n_tokens = 40_000_000
    a = WindowOrder("block_shuffle", 3, 1024, n_tokens)
    b = WindowOrder("block_shuffle", 3, 1024, n_tokens)
    k = np.arange(0, a.n_samples, 97)
    assert np.array_equal(a.starts(1, k), b.starts(1, k))
    assert not np.array_equal(a.starts(0, k), a.starts(1, k))
    assert not np.array_equal(a.starts(1, k), WindowOrder("block_shuffle", 4, 1024, n_tokens).starts(1, k))
    starts = a.starts(0, np.arange(a.n_samples))
    assert np.array_equal(np.sort(starts), np.arange(a.n_samples) * 1025)


@pytest.mark.parametrize("mode", ["shuffle", "block_shuffle"])
def test_a_batch_reads_few_blocks_only_in_block_shuffle(mode):
    """The measure RESULTS.md reports: distinct 4 Mi-token blocks among a batch's 32 windows."""
    n_tokens = 1 << 32
    order = WindowOrder(mode, 0, 1024, n_tokens)
    starts = order.starts(0, np.arange(32 * 200)).reshape(200, 32)
    blocks_per_batch = np.mean([len(np.unique(s >> 22)) for s in starts])
    if mode == "shuffle":
        assert blocks_per_batch > 31
    else:
        assert blocks_per_batch < 27  # 32 draws from 64 blocks: 25.3 distinct expected (31.5 of 1024)


def test_the_loader_reads_every_window_once_per_epoch_and_resumes_exactly(shard_dir, monkeypatch):
    import torch
    from _util import check_resume

    import streamtok
    from streamtok import _order

    monkeypatch.setattr(_order, "BLOCK_TOKENS", 33 * 8)  # groups of 8 windows, pools of 64 windows
    monkeypatch.setattr(_order, "POOL_BLOCKS", 8)
    path, tokens = shard_dir

    def factory():
        return streamtok.loader(str(path / "*.bin"), seq_len=32, batch_size=4, mode="block_shuffle", epochs=2, seed=1, split="all")

    n = check_resume(factory, [3, 50])
    x = torch.cat([x for x, _ in factory()])
    per_epoch = len(tokens) // 33 // 4 * 4
    assert n == 2 * (per_epoch // 4)
    first = np.sort(x[:per_epoch, 0].numpy())
    # tokens equal their positions: each epoch reads windows starting at distinct multiples of 33
    assert len(np.unique(first)) == per_epoch and np.all(first % 33 == 0)
    pools = x[:64, 0].numpy() // 33 // 8
    assert len(np.unique(pools)) <= 8
