import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtok import ConfigError, KeyedPermutation, MemmapReader, ShardLister, StateMismatchError, WindowSampler
from streamtok.sampler import PassStart


@given(n=st.integers(1, 5000), key=st.integers(0, 2**63))
@settings(max_examples=60, deadline=None)
def test_permutation_is_a_bijection(n, key):
    perm = KeyedPermutation(n, key)(np.arange(n))
    assert sorted(perm.tolist()) == list(range(n))


def test_permutation_pointwise_matches_whole_and_keys_differ():
    p = KeyedPermutation(100_003, 42)
    whole = p(np.arange(100_003))
    idx = np.array([0, 5, 99_999, 100_002])
    assert np.array_equal(p(idx), whole[idx])
    assert not np.array_equal(KeyedPermutation(100_003, 43)(np.arange(100)), whole[:100])
    assert not np.array_equal(whole[:100], np.arange(100))  # it does shuffle


def plain_permutation(n, key, k):
    """The keyed permutation written plainly in Python ints: splitmix64's finaliser as the round
    function of a 4-round Feistel network on the next even power of two, cycle-walking into [0, n)."""
    mask64 = (1 << 64) - 1

    def mix(z):
        z = (z + 0x9E3779B97F4A7C15) & mask64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
        return z ^ (z >> 31)

    def hash_key(*parts):
        z = 0
        for p in parts:
            z = mix(z ^ (p & mask64))
        return z

    half = (max(2, (n - 1).bit_length()) + 1) // 2
    keys = [hash_key(key, r) for r in range(4)]
    x = k
    while True:
        left, right = x >> half, x & ((1 << half) - 1)
        for rk in keys:
            left, right = right, left ^ (mix(right ^ rk) & ((1 << half) - 1))
        x = (left << half) | right
        if x < n:
            return x


@pytest.mark.parametrize("n", [2, 3, 17, 1000, 15_609, 31_219, 65_537, 100_003])
def test_permutation_is_the_plain_feistel_walk(n):
    # n just above a power of 4 walks longest: the last values of a batch finish the walk in
    # Python ints, the rest in numpy; both must give the plain network's values.
    rng = np.random.default_rng(n)
    k = rng.integers(0, n, 3000)
    p = KeyedPermutation(n, 2**61 + n)
    want = [plain_permutation(n, 2**61 + n, int(v)) for v in k.tolist()]
    assert p(k).tolist() == want
    assert p(k.reshape(3, 1000)).tolist() == np.array(want).reshape(3, 1000).tolist()
    assert int(p(int(k[5]))) == want[5]


def sampler(shard_dir, **kw):
    reader = MemmapReader(ShardLister(shard_dir[0]).split("all"))
    kw.setdefault("seq_len", 16)
    return WindowSampler(reader, **kw)


def all_starts(s):
    return [int(v) for step in s for v in step]


def test_shuffle_epoch_visits_every_window_once(shard_dir):
    s = sampler(shard_dir, batch_size=1)
    starts = all_starts(s)
    n = shard_dir[1].size // 17
    assert sorted(starts) == [i * 17 for i in range(n)]


def test_sequential_covers_every_token_once(shard_dir):
    s = sampler(shard_dir, mode="sequential", batch_size=1)
    starts = all_starts(s)
    assert starts == [k * 16 for k in range((shard_dir[1].size - 1) // 16)]


def test_random_is_in_range_and_deterministic(shard_dir):
    a = all_starts(sampler(shard_dir, mode="random", seed=3, batch_size=4))
    b = all_starts(sampler(shard_dir, mode="random", seed=3, batch_size=4))
    c = all_starts(sampler(shard_dir, mode="random", seed=4, batch_size=4))
    assert a == b != c
    assert min(a) >= 0 and max(a) <= shard_dir[1].size - 17
    assert len(set(a)) > len(a) * 0.9


def test_epochs_reshuffle_and_seed_repeats(shard_dir):
    s = sampler(shard_dir, epochs=2, batch_size=8)
    steps = [step.tolist() for step in s]
    half = len(steps) // 2
    assert steps[:half] != steps[half:]
    for epoch in (steps[:half], steps[half:]):  # each epoch: distinct windows, drop-last aside
        flat = sum(epoch, [])
        assert len(set(flat)) == len(flat) == (shard_dir[1].size // 17) // 8 * 8
    again = [step.tolist() for step in sampler(shard_dir, epochs=2, batch_size=8)]
    assert again == steps


def test_new_pass_continues_with_the_next_epoch(shard_dir):
    s = sampler(shard_dir, batch_size=8)
    first, second = [x.tolist() for x in s], [x.tolist() for x in s]
    both = [x.tolist() for x in sampler(shard_dir, batch_size=8, epochs=2)]
    assert first + second == both


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_each_step_without_overlap(shard_dir, world):
    per_rank = [all_starts(sampler(shard_dir, batch_size=4, rank=r, world_size=world)) for r in range(world)]
    flat = sum(per_rank, [])
    assert len(set(flat)) == len(flat)
    n = shard_dir[1].size // 17
    assert len(flat) == (n // (4 * world)) * 4 * world


def test_position_after_matches_stepping(shard_dir):
    s = sampler(shard_dir, batch_size=5, world_size=2, rank=1, epochs=3)
    start = PassStart(0, 30, 3)
    pos, walked = (0, 30), []
    for j in range(s.pass_steps(start)):
        assert s.position_after(start, j) == pos
        pos = s.next_position(*pos)
        walked.append(pos)
    assert pos == (3, 0)


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_shares_interleave_to_the_whole(shard_dir, workers):
    s = sampler(shard_dir, batch_size=4, epochs=2)
    start = s.begin_pass()
    whole = [x.tolist() for x in s.iter_steps(start)]
    shares = [[x.tolist() for x in s.iter_steps(start, w, workers)] for w in range(workers)]
    merged = [shares[j % workers][j // workers] for j in range(len(whole))]
    assert merged == whole


def test_errors_name_the_problem(shard_dir):
    with pytest.raises(ConfigError, match="longer than"):
        sampler(shard_dir, seq_len=10**6)
    with pytest.raises(ConfigError, match="cannot fill one global step"):
        sampler(shard_dir, seq_len=1000, batch_size=20)
    with pytest.raises(ConfigError, match="mode"):
        sampler(shard_dir, mode="shuffled")
    with pytest.raises(ConfigError, match="rank"):
        sampler(shard_dir, rank=2, world_size=2)


def test_state_mismatch_is_refused_with_the_difference(shard_dir):
    state = sampler(shard_dir, seed=1).state_dict()
    for kw, key in [({"seed": 2}, "seed"), ({"seq_len": 32}, "seq_len"), ({"mode": "random"}, "mode")]:
        other = sampler(shard_dir, **{"seed": 1, **kw})
        with pytest.raises(StateMismatchError, match=f"{key}=") as err:
            other.load_state_dict(state)
        assert "saved" in str(err.value)


def test_rank_from_environment(shard_dir, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    s = sampler(shard_dir)
    assert (s.rank, s.world_size) == (1, 2)


def test_permutation_takes_scalars_and_arrays():
    p = KeyedPermutation(1000, 5)
    whole = p(np.arange(1000))
    assert [int(p(k)) for k in range(1000)] == whole.tolist()
    assert p(7).shape == () and p(np.array([[1, 2], [3, 4]])).shape == (2, 2)
