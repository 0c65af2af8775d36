import numpy as np
import pytest

from streamtok import MemmapReader, ShardFormatError, ShardNotFoundError
from streamtok._formats import HEADER_BYTES, llmc_header, probe_shard, write_shard


@pytest.mark.parametrize(
    "dtype, kind, want_kind, want_offset",
    [
        (np.uint16, "llmc", "llmc", HEADER_BYTES),
        (np.uint32, "llmc", "llmc", HEADER_BYTES),
        (np.uint16, "raw", "raw", 0),
        (np.int32, "npy", "npy", None),
        (np.int64, "npy", "npy", None),
        (np.uint16, "npy", "npy", None),
    ],
)
def test_round_trip_each_format(tmp_path, dtype, kind, want_kind, want_offset):
    tokens = (np.arange(1000) * 7 % 50000).astype(dtype)
    path = tmp_path / ("s.npy" if kind == "npy" else "s.bin")
    info = write_shard(path, tokens, kind=kind)
    assert info.kind == want_kind and info.n_tokens == 1000 and info.dtype == np.dtype(dtype)
    if want_offset is not None:
        assert info.offset == want_offset
    assert np.array_equal(MemmapReader([path], raw_dtype=dtype).read(0, 1000), tokens)


def test_llmc_versions(tmp_path):
    assert probe_shard(write_shard(tmp_path / "a.bin", np.zeros(3, np.uint16)).path).version == 1
    assert probe_shard(write_shard(tmp_path / "b.bin", np.zeros(3, np.uint32)).path).version == 7


def test_npy_header_is_not_read_as_tokens(tmp_path):
    tokens = np.arange(100, dtype=np.int32)
    np.save(tmp_path / "t.npy", tokens)
    reader = MemmapReader([tmp_path / "t.npy"])
    assert reader.n_tokens == 100 and np.array_equal(reader.read(0, 100), tokens)


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: write_bytes(p / "empty.bin", b""), "empty"),
        (lambda p: write_bytes(p / "odd.bin", b"\x01\x02\x03"), "not a multiple of 2"),
        (
            lambda p: write_bytes(p / "short.bin", llmc_header(100).tobytes() + b"\x00" * 150),
            "header says 100 tokens",
        ),
        (
            lambda p: write_bytes(
                p / "ver.bin",
                np.array([20240520, 3, 2] + [0] * 253, "<i4").tobytes() + b"\x00" * 4,
            ),
            "unknown version 3",
        ),
        (
            lambda p: write_bytes(p / "hdr.bin", np.array([20240520, 1], "<i4").tobytes()),
            "truncated",
        ),
    ],
)
def test_bad_shards_name_the_file(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(ShardFormatError) as err:
        probe_shard(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_npy_must_be_1d_integer(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros(10, np.float32))
    np.save(tmp_path / "m.npy", np.zeros((2, 5), np.int32))
    for name in ("f.npy", "m.npy"):
        with pytest.raises(ShardFormatError, match="1-D with an integer dtype") as err:
            probe_shard(tmp_path / name)
        assert name in str(err.value)


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "t.npy", np.arange(100, dtype=np.int32))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-10])
    with pytest.raises(ShardFormatError, match="truncated"):
        probe_shard(tmp_path / "t.npy")


def test_missing_file(tmp_path):
    with pytest.raises(ShardNotFoundError, match="nope.bin"):
        probe_shard(tmp_path / "nope.bin")


def test_writer_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError):
        write_shard(tmp_path / "x.bin", np.arange(10, dtype=np.uint16))
    assert list(tmp_path.iterdir()) == []


def test_written_shards_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        import importlib

        import streamtok._atomic as atomic

        importlib.reload(atomic)  # the umask is read once, at import
        with atomic.atomic_write(tmp_path / "x.bin") as f:
            f.write(b"\x00\x00")
    finally:
        os.umask(old)
        importlib.reload(atomic)
    assert stat.S_IMODE(os.stat(tmp_path / "x.bin").st_mode) == 0o644


def test_a_shard_changed_after_open_is_named(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(1000, dtype=np.uint16))
    reader = MemmapReader([path])
    with open(path, "r+b") as f:
        f.truncate(1500)
    with pytest.raises(ShardFormatError, match="changed since the reader opened it") as err:
        reader.read(0, 10)
    assert str(path) in str(err.value)
