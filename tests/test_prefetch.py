import pytest
import torch

import streamtok
from _util import batch_hash, roundtrip, take
from streamtok import ConfigError, CUDAPrefetcher


def make(path, **kw):
    return streamtok.loader(path, seq_len=32, batch_size=4, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_batches_as_the_loader(shard_dir, workers):
    path, _ = shard_dir
    ref = [batch_hash(*b) for b in make(path)]
    pf = CUDAPrefetcher(make(path, num_workers=workers), device="cpu", depth=3)
    got = [batch_hash(*b) for b in pf]
    assert got == ref and len(pf) == len(ref)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_state_is_as_of_the_last_consumed_batch(shard_dir, depth):
    path, _ = shard_dir
    plain = make(path)
    pf = CUDAPrefetcher(make(path), device="cpu", depth=depth)
    it = iter(pf)
    for _ in range(7):
        next(it)
    assert pf.in_flight == depth  # batches fetched ahead are not counted as consumed
    take(plain, 7)
    assert pf.state_dict() == plain.state_dict()
    ref = [batch_hash(*b) for b in make(path)]
    resumed = CUDAPrefetcher(make(path), device="cpu", depth=depth)
    resumed.load_state_dict(roundtrip(pf.state_dict()))
    assert [batch_hash(*b) for b in resumed] == ref[7:]


def test_state_before_any_batch_is_the_loaded_one(shard_dir):
    path, _ = shard_dir
    first = make(path)
    take(first, 3)
    state = roundtrip(first.state_dict())
    pf = CUDAPrefetcher(make(path), device="cpu")
    pf.load_state_dict(state)
    assert pf.state_dict() == state


def test_dtype_is_converted_at_the_end(shard_dir):
    x, y = next(iter(CUDAPrefetcher(make(shard_dir[0]), device="cpu", dtype=torch.int32)))
    assert x.dtype == y.dtype == torch.int32 and x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])


def test_generic_iterables_pass_through():
    data = [(torch.arange(3), {"m": torch.ones(2)}) for _ in range(4)]
    out = list(CUDAPrefetcher(data, device="cpu", depth=2))
    assert len(out) == 4 and torch.equal(out[0][0], torch.arange(3)) and torch.equal(out[2][1]["m"], torch.ones(2))


def test_bad_settings():
    with pytest.raises(ConfigError, match="depth"):
        CUDAPrefetcher([], depth=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            CUDAPrefetcher([], device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu(shard_dir):
    path, _ = shard_dir
    ref = [(x, y) for x, y in make(path)]
    got = list(CUDAPrefetcher(make(path, pin_memory=True), device="cuda", depth=2))
    assert got[0][0].is_cuda and got[0][0].dtype == torch.int64
    assert all(torch.equal(a.cpu(), c) and torch.equal(b.cpu(), d) for (a, b), (c, d) in zip(got, ref))


@pytest.mark.parametrize("depth", [1, 3])
def test_background_thread_stages_depth_batches_ahead(shard_dir, depth):
    import time

    path, _ = shard_dir
    ref = [batch_hash(*b) for b in make(path)]
    pf = CUDAPrefetcher(make(path, num_workers=2), device="cpu", depth=depth)
    assert pf.background
    it = iter(pf)
    first = next(it)
    deadline = time.monotonic() + 10
    while pf.in_flight < depth and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert pf.in_flight <= depth
    rest = [batch_hash(*b) for b in it]
    assert [batch_hash(*first)] + rest == ref
