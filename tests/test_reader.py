import os
import pickle

import numpy as np
import pytest

from streamtok import ConfigError, MemmapReader, ShardLister


def test_virtual_array_spans_shards(shard_dir):
    path, tokens = shard_dir
    reader = ShardLister(path).split("all").memmap()
    assert reader.n_tokens == len(tokens) and reader.dtype == np.uint32
    assert np.array_equal(reader.read(0, reader.n_tokens), tokens)


@pytest.mark.parametrize("start", [0, 4990, 4999, 5000, 7990, 8001, 12000])
def test_windows_crossing_shard_ends_are_stitched(shard_dir, start):
    path, tokens = shard_dir
    reader = MemmapReader(ShardLister(path).split("all"))
    out = np.empty((1, 1025), dtype=np.int64)
    reader.gather(np.array([start]), 1025, out)
    assert np.array_equal(out[0], tokens[start : start + 1025])


def test_window_across_three_shards(tmp_path):
    from _util import make_shards

    tokens = make_shards(tmp_path, [5, 3, 4, 9])
    reader = MemmapReader(tmp_path)
    assert np.array_equal(reader.read(3, 15), tokens[3:15])


def test_reader_pickles_without_its_maps(shard_dir):
    reader = MemmapReader(ShardLister(shard_dir[0]).split("all"))
    reader.read(0, 10)
    assert len(reader._maps) == 1
    clone = pickle.loads(pickle.dumps(reader))
    assert len(clone._maps) == 0 and np.array_equal(clone.read(0, 10), reader.read(0, 10))


def test_bounded_open_maps(shard_dir):
    reader = MemmapReader(ShardLister(shard_dir[0]).split("all"), max_open=2)
    reader.read(0, reader.n_tokens)
    assert len(reader._maps) == 2


def test_fingerprint_names_data_not_location(tmp_path):
    from _util import make_shards

    make_shards(tmp_path / "a", [10, 20])
    make_shards(tmp_path / "b", [10, 20])
    make_shards(tmp_path / "c", [10, 21])
    fa, fb, fc = (MemmapReader(tmp_path / d).fingerprint for d in "abc")
    assert fa == fb != fc


def test_advice_and_willneed_keep_data(shard_dir):
    path, tokens = shard_dir
    for advice in ("random", "sequential", "normal"):
        reader = MemmapReader(ShardLister(path).split("all"), advice=advice)
        reader.willneed(np.array([0, 4990, 9000]), 600)
        assert np.array_equal(reader.read(4990, 5600), tokens[4990:5600])
    with pytest.raises(ConfigError, match="advice"):
        MemmapReader(ShardLister(path).split("all"), advice="fast")


def test_mixed_dtypes_promote(tmp_path):
    from streamtok._formats import write_shard

    write_shard(tmp_path / "a_0.bin", np.array([1, 2, 3], np.uint16))
    write_shard(tmp_path / "a_1.npy", np.array([70000, 5], np.int32))
    reader = MemmapReader(tmp_path)
    assert reader.dtype == np.int32 and reader.read(0, 5).tolist() == [1, 2, 3, 70000, 5]


def test_indexing_like_an_array(shard_dir):
    path, tokens = shard_dir
    reader = MemmapReader(ShardLister(path).split("all"))
    assert len(reader) == len(tokens)
    assert reader[0] == tokens[0] and reader[-1] == tokens[-1] and reader[5000] == tokens[5000]
    assert np.array_equal(reader[4990:5010], tokens[4990:5010])
    assert np.array_equal(reader[-5:], tokens[-5:])
    with pytest.raises(IndexError):
        reader[len(tokens)]


@pytest.mark.parametrize("out_dtype", [np.uint32, np.int64])  # uint32: pread straight into out; int64: converts
def test_read_pieces_in_any_order_across_shards(tmp_path, out_dtype):
    from _util import make_shards

    tokens = make_shards(tmp_path, [700, 5, 1300, 900])
    reader = MemmapReader(tmp_path)
    rng = np.random.default_rng(0)
    for n_pieces in (1, 3, 40):
        lengths = rng.integers(1, 300, n_pieces)
        starts = rng.integers(0, reader.n_tokens - lengths)  # some run past shard ends
        out = np.empty(int(lengths.sum()), dtype=out_dtype)
        reader.read_pieces(starts, lengths, out)
        assert np.array_equal(out, np.concatenate([tokens[s : s + n] for s, n in zip(starts, lengths)]))
    # pieces inside shards only, two shards touched, in descending order
    starts, lengths = np.array([2500, 100, 1800, 0]), np.array([300, 600, 200, 1])
    out = np.empty(int(lengths.sum()), dtype=out_dtype)
    reader.read_pieces(starts, lengths, out)
    assert np.array_equal(out, np.concatenate([tokens[s : s + n] for s, n in zip(starts, lengths)]))


def test_read_pieces_of_a_truncated_shard_is_a_named_error(tmp_path):
    from _util import make_shards

    from streamtok import ShardFormatError

    make_shards(tmp_path, [1000, 1000])
    reader = MemmapReader(tmp_path)
    out = np.empty(150, dtype=np.uint32)
    reader.read_pieces(np.array([10, 1900]), np.array([100, 50]), out)  # opens both files
    os.truncate(reader.paths[1], os.path.getsize(reader.paths[1]) - 400)  # the last 100 tokens gone
    with pytest.raises(ShardFormatError, match=r"shard_000001\.bin: the file changed .*truncated"):
        reader.read_pieces(np.array([10, 1900]), np.array([100, 50]), out)
