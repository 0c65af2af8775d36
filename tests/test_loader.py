import json

import numpy as np
import pytest
import torch
from _util import batch_hash, check_resume, make_shards, roundtrip, take
from torchdata.stateful_dataloader import StatefulDataLoader

import streamtok
from streamtok import ConfigError, StateMismatchError, TokenRangeError

T, B = 32, 4


def make(path, **kw):
    kw = {"seq_len": T, "batch_size": B, **kw}
    return streamtok.loader(path, **kw)


def test_rows_are_windows_of_the_data(shard_dir):
    path, tokens = shard_dir
    loader = make(path, split="all", epochs=1)
    assert isinstance(loader, StatefulDataLoader)
    n = 0
    for x, y in loader:
        assert x.shape == y.shape == (B, T) and x.dtype == torch.int64 and x.is_contiguous()
        for row_x, row_y in zip(x.numpy(), y.numpy()):
            s = int(row_x[0])
            assert np.array_equal(row_x, tokens[s : s + T]) and np.array_equal(row_y, tokens[s + 1 : s + T + 1])
        n += 1
    assert n == len(loader) == (len(tokens) // (T + 1)) // B


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
def test_stream_does_not_depend_on_num_workers(shard_dir, mode):
    path, _ = shard_dir
    ref = [batch_hash(x, y) for x, y in make(path, mode=mode, num_workers=0)]
    for workers in (1, 2, 3):
        assert [batch_hash(x, y) for x, y in make(path, mode=mode, num_workers=workers)] == ref


def test_shuffle_epoch_over_ranks_and_workers_is_exactly_once(shard_dir):
    path, tokens = shard_dir
    seen = []
    for rank, workers in [(0, 2), (1, 3)]:
        for x, _ in make(path, split="all", rank=rank, world_size=2, num_workers=workers):
            seen += x[:, 0].tolist()
    n_windows = tokens.size // (T + 1)
    assert len(seen) == len(set(seen)) == n_windows // (2 * B) * 2 * B
    assert all(s % (T + 1) == 0 for s in seen)


def test_epochs_and_seed(shard_dir):
    path, _ = shard_dir
    two = [batch_hash(*b) for b in make(path, epochs=2)]
    half = len(two) // 2
    assert two[:half] != two[half:]
    assert [batch_hash(*b) for b in make(path, epochs=2)] == two
    assert [batch_hash(*b) for b in make(path, epochs=2, seed=1)] != two


def test_endless_stream_crosses_epochs(shard_dir):
    path, _ = shard_dir
    loader = make(path, epochs=None)
    per_epoch = len(make(path))
    got = take(loader, per_epoch * 2 + 3)
    assert len(got) == per_epoch * 2 + 3
    assert loader.state_dict()["sampler"]["epoch"] == 2
    with pytest.raises(TypeError):
        len(loader)


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_exact(shard_dir, mode, workers):
    path, _ = shard_dir
    n = check_resume(lambda: make(path, mode=mode, num_workers=workers, epochs=2), [1, 7, 40, 41, 42, 77])
    assert n > 77


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_within_and_at_the_end_of_three_passes(shard_dir, workers):
    """`for epoch in range(3): for b in loader`: every pass a new epoch, resumable anywhere."""
    path, _ = shard_dir
    n = check_resume(lambda: make(path, split="all", num_workers=workers, epochs=1, batch_size=16), [5], passes=3)
    assert n == (14098 // (T + 1)) // 16


def test_state_is_small_json(shard_dir):
    loader = make(shard_dir[0])
    take(loader, 3)
    state = loader.state_dict()
    assert roundtrip(state) == state and len(json.dumps(state)) < 600


def test_resume_with_more_workers(shard_dir):
    path, _ = shard_dir
    full = [batch_hash(*b) for b in make(path, num_workers=0)]
    first = make(path, num_workers=2)
    head = [batch_hash(*b) for b in take(first, 9)]
    again = make(path, num_workers=3)
    again.load_state_dict(roundtrip(first.state_dict()))
    assert head + [batch_hash(*b) for b in again] == full


def starts_of(loader, n=None):
    return [s for x, _ in take(loader, n) for s in x[:, 0].tolist()]


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_elastic_world_size(shard_dir, before, after):
    path, tokens = shard_dir
    k = 5
    seen, states = [], []
    for r in range(before):
        ld = make(path, split="all", rank=r, world_size=before)
        seen += starts_of(ld, k)
        states.append(roundtrip(ld.state_dict()))
    assert all(s["sampler"]["offset"] == states[0]["sampler"]["offset"] for s in states)
    for r in range(after):
        ld = make(path, split="all", rank=r, world_size=after)
        ld.load_state_dict(states[0])
        seen += starts_of(ld)
    n_windows = tokens.size // (T + 1)
    assert len(seen) == len(set(seen)), "a window was repeated"
    remainder = n_windows - len(seen)
    assert 0 <= remainder < B * after, "windows were skipped beyond the drop-last remainder"


def test_state_from_other_configuration_is_refused(shard_dir, tmp_path):
    path, _ = shard_dir
    state = roundtrip(make(path, seed=0).state_dict())
    with pytest.raises(StateMismatchError, match="seed=0.*seed=1"):
        make(path, seed=1).load_state_dict(state)
    with pytest.raises(StateMismatchError, match="seq_len"):
        make(path, seq_len=T * 2).load_state_dict(state)
    make_shards(tmp_path / "other", [5000, 3002, 4097, 2000])
    with pytest.raises(StateMismatchError, match="data"):
        make(tmp_path / "other").load_state_dict(state)
    with pytest.raises(StateMismatchError, match="not a streamtok loader state"):
        make(path).load_state_dict({"_snapshot": {}})


def test_bad_input_errors(shard_dir, tmp_path):
    path, _ = shard_dir
    with pytest.raises(ConfigError, match="longer than"):
        make(path, seq_len=100_000)
    with pytest.raises(ConfigError, match="persistent_workers"):
        make(path, num_workers=0, persistent_workers=True)
    with pytest.raises(ConfigError, match="unsupported"):
        make(path, shuffle=True)
    with pytest.raises(streamtok.ShardNotFoundError, match="nothing_here"):
        make(tmp_path / "nothing_here")


def test_vocab_size_check_names_shard_and_offset(shard_dir):
    path, tokens = shard_dir
    with pytest.raises(TokenRangeError, match=r"shard_0000\d\d\.bin: token \d+ at token offset \d+ is not below vocab_size 100"):
        take(make(path, vocab_size=100), 1)
    assert len(take(make(path, vocab_size=int(tokens.max()) + 1), 2)) == 2


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_output_dtype(shard_dir, dtype):
    x, y = next(iter(make(shard_dir[0], dtype=dtype)))
    assert x.dtype == y.dtype == dtype


def test_uint16_compact_batches_match(gpt2_dir):
    path, tokens = gpt2_dir
    loader = streamtok.loader(path, seq_len=64, batch_size=8, split="all", mode="sequential")
    x, y = next(iter(loader))
    assert np.array_equal(x.numpy().ravel()[:64], tokens[:64]) and np.array_equal(y[0].numpy(), tokens[1:65])
    buf = next(iter(streamtok.loader(path, seq_len=64, batch_size=8, split="all", mode="sequential").iter_compact()))
    assert buf.dtype == torch.uint16 and buf.shape == (8, 65)


def test_create_dataloaders(tmp_path):
    np.save(tmp_path / "train.npy", np.arange(20_000, dtype=np.int32))
    np.save(tmp_path / "val.npy", np.arange(3_000, dtype=np.int32))
    train, val = streamtok.create_dataloaders(tmp_path / "train.npy", tmp_path / "val.npy", 4, 64, 0, None, 0)
    x, y = next(iter(train))
    assert x.shape == (4, 64) and torch.equal(x + 1, y)
    vx = [x for x, _ in val]
    assert vx[0][0, 0] == 0 and len(vx) == (3000 - 1) // 64 // 4
    assert [batch_hash(*b) for b in train] != [batch_hash(*b) for b in train]  # each pass reshuffles


def test_explicit_stages_and_chained_form_agree(shard_dir):
    from streamtok import Collator, MemmapReader, ShardLister, WindowSampler

    path, _ = shard_dir
    shards = ShardLister(path).split("train", holdout=1)
    windows = WindowSampler(MemmapReader(shards), T, mode="shuffle", seed=0, batch_size=B)
    explicit = [batch_hash(*b) for b in Collator(windows).loader(num_workers=0)]
    chained = ShardLister(path).split("train").memmap().windows(T, seed=0).batch(B).loader(num_workers=2)
    assert [batch_hash(*b) for b in chained] == explicit == [batch_hash(*b) for b in make(path)]
    standalone = [batch_hash(*b) for b in ShardLister(path).split("train").memmap().windows(T).batch(B)]
    assert standalone == explicit  # the collator iterates on its own, without a DataLoader


def test_collator_as_a_pure_function_of_reader_and_starts(shard_dir):
    from streamtok import Collator, MemmapReader, ShardLister

    path, tokens = shard_dir
    reader = MemmapReader(ShardLister(path).split("all"))
    collate = Collator(reader, seq_len=T)
    x, y = collate(np.array([0, 4990, 12000]))
    assert x.shape == (3, T) and x.dtype == torch.int64
    for row, s in zip(x.numpy(), [0, 4990, 12000]):
        assert np.array_equal(row, tokens[s : s + T])
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(TypeError, match="no sample order"):
        iter(collate).__next__()
    with pytest.raises(ConfigError, match="WindowSampler"):
        collate.loader()


@pytest.mark.slow
def test_spawned_workers_give_the_same_stream(shard_dir):
    path, _ = shard_dir
    ref = [batch_hash(*b) for b in make(path, mode="random")]
    got = [batch_hash(*b) for b in make(path, mode="random", num_workers=2, multiprocessing_context="spawn")]
    assert got == ref


def test_collator_refuses_starts_outside_the_data(shard_dir):
    from streamtok import Collator, MemmapReader, ShardLister

    reader = MemmapReader(ShardLister(shard_dir[0]).split("all"))
    collate = Collator(reader, seq_len=T)
    for bad in ([-1], [reader.n_tokens - T]):
        with pytest.raises(ConfigError, match="window starts must lie in"):
            collate(np.array(bad))
    x, _ = collate(np.array([reader.n_tokens - T - 1]))
    assert x.shape == (1, T)
