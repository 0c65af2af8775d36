import os

import pytest
from _util import make_shards

from streamtok import ConfigError, ShardLister, ShardNotFoundError


def test_directory_natural_order(tmp_path):
    for name in ["s_10.bin", "s_2.bin", "s_1.bin", "notes.txt", ".s_3.bin.tmp"]:
        (tmp_path / name).write_bytes(b"\x00\x00")
    assert [os.path.basename(p) for p in ShardLister(tmp_path)] == ["s_1.bin", "s_2.bin", "s_10.bin"]


def test_glob_and_list(tmp_path):
    make_shards(tmp_path, [10, 10, 10])
    by_glob = ShardLister(str(tmp_path / "shard_*.bin"))
    assert len(by_glob) == 3
    given = list(reversed(by_glob.paths))
    assert ShardLister(given).paths == tuple(given)  # a list keeps its order


@pytest.mark.parametrize(
    "which, holdout, want", [("train", 1, [0, 1, 2]), ("val", 1, [3]), ("all", 1, [0, 1, 2, 3]), ("train", 2, [0, 1]), ("val", 2, [2, 3])]
)
def test_split_holds_out_the_last_shards(tmp_path, which, holdout, want):
    make_shards(tmp_path, [10] * 4)
    paths = ShardLister(tmp_path).paths
    assert ShardLister(tmp_path).split(which, holdout=holdout).paths == tuple(paths[i] for i in want)


def test_val_named_shards_form_the_val_split(tmp_path):
    make_shards(tmp_path, [10, 10, 10], prefix="edu_fineweb_train")
    make_shards(tmp_path, [10], prefix="edu_fineweb_val")
    lister = ShardLister(tmp_path)
    assert [os.path.basename(p) for p in lister.split("val").paths] == ["edu_fineweb_val_000000.bin"]
    assert len(lister.split("train").paths) == 3


def test_errors(tmp_path):
    with pytest.raises(ShardNotFoundError, match="no files match"):
        ShardLister(str(tmp_path / "*.bin"))
    with pytest.raises(ShardNotFoundError, match="no such file"):
        ShardLister(tmp_path / "missing")
    with pytest.raises(ShardNotFoundError, match="no shard files"):
        ShardLister(tmp_path)
    make_shards(tmp_path, [10])
    with pytest.raises(ConfigError, match="need at least 2 shards"):
        ShardLister(tmp_path).split("train")
    with pytest.raises(ConfigError, match="split must be"):
        ShardLister(tmp_path).split("test")
