"""streamtok._vmread: a batch's spans copied out of the shards' maps in one system call, with a
truncated file giving a short count (then a named error from pread), never SIGBUS."""

import ctypes
import errno
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _util import BOS, make_doc_shards, make_shards, read_after_truncation

from streamtok import MemmapReader, ShardFormatError
from streamtok import _vmread as vmread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process_vm_readv is Linux's")


def test_a_truncated_map_gives_a_short_count_not_sigbus(tmp_path):
    script = textwrap.dedent(
        f"""
        import mmap, os
        import numpy as np
        from streamtok import _vmread as vmread
        path = {str(tmp_path / "f.bin")!r}
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20))
        f = open(path, "rb")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        base = np.frombuffer(mm, dtype=np.uint8)
        os.truncate(path, 4096)  # what `cp new.bin shard.bin` does first
        out = np.zeros(3 * 4096, dtype=np.uint8)
        def copy(offsets, n):
            nbytes = np.full(len(offsets), n, dtype=np.int64)
            dest = out.ctypes.data + np.arange(len(offsets), dtype=np.int64) * n
            return vmread.copy_spans(dest, base.ctypes.data + np.array(offsets, dtype=np.int64), nbytes)
        print(copy([0], 4096), copy([0, 2048], 4096), copy([512 * 1024], 4096), vmread.usable())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # SIGBUS would be -7
    assert done.stdout.split() == ["4096", "6144", "0", "True"]  # inside; one whole span and half the next; none


def test_more_spans_than_one_call_takes(tmp_path):
    tokens = make_shards(tmp_path, [300_000])
    reader = MemmapReader(tmp_path)
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 40, 2 * vmread.IOV_MAX + 7)
    starts = rng.integers(0, reader.n_tokens - 40, len(lengths))
    out = np.empty(int(lengths.sum()), dtype=reader.dtype)
    reader.read_pieces(starts, lengths, out)
    assert vmread.usable()
    assert np.array_equal(out, np.concatenate([tokens[s : s + n] for s, n in zip(starts, lengths)]))


def _reads(reader, rng):
    lengths = rng.integers(1, 700, 60)
    starts = rng.integers(0, reader.n_tokens - lengths)  # some run past shard ends
    inside = rng.integers(0, 1100, 60)  # inside the first shard only: the one-call path
    pieces = [np.empty(int(lengths.sum()), reader.dtype), np.empty(60 * 100, reader.dtype), np.empty((16, 65), reader.dtype)]
    reader.read_pieces(starts, lengths, pieces[0])
    reader.read_pieces(inside, np.full(60, 100), pieces[1])
    reader.gather(np.sort(rng.integers(0, reader.n_tokens - 65, 16)), 65, pieces[2])
    return pieces


def test_the_same_tokens_with_the_call_and_with_pread(tmp_path, monkeypatch):
    make_shards(tmp_path, [1200, 7, 3000, 900], dtype=np.uint16)
    reader = MemmapReader(tmp_path)
    fast = _reads(reader, np.random.default_rng(5))
    assert vmread.usable()
    monkeypatch.setattr(vmread, "_usable", False)
    slow = _reads(reader, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


def test_a_kernel_that_refuses_the_call_leaves_pread(tmp_path, monkeypatch):
    tokens = make_shards(tmp_path, [5000], dtype=np.uint16)
    reader = MemmapReader(tmp_path)
    calls = []

    def refused(*args):
        calls.append(args)
        ctypes.set_errno(errno.EPERM)  # as a seccomp filter answers
        return -1

    monkeypatch.setattr(vmread, "_call", refused)
    monkeypatch.setattr(vmread, "_usable", True)
    out = np.empty((4, 33), reader.dtype)
    for _ in range(3):
        reader.gather(np.array([0, 100, 2000, 4900]), 33, out)
        assert np.array_equal(out, np.stack([tokens[s : s + 33] for s in (0, 100, 2000, 4900)]))
    assert len(calls) == 1 and not vmread.usable()  # asked once, then pread for good


def test_a_short_copy_ends_in_the_named_error(tmp_path):
    make_shards(tmp_path, [1000, 1000], dtype=np.uint16)
    reader = MemmapReader(tmp_path)
    out = np.empty(150, dtype=reader.dtype)
    reader.read_pieces(np.array([10, 1900]), np.array([100, 50]), out)  # maps both files
    import os

    os.truncate(reader.paths[1], os.path.getsize(reader.paths[1]) - 400)
    assert vmread.usable()
    with pytest.raises(ShardFormatError, match=r"shard_000001\.bin: the file changed .*truncated"):
        reader.read_pieces(np.array([10, 1900]), np.array([100, 50]), out)


@pytest.mark.parametrize("workers", [0, 2])
def test_packed_rows_of_a_shard_truncated_while_reading_are_an_error_not_sigbus(tmp_path, workers):
    make_doc_shards(tmp_path / "d", n_shards=2, docs=3000, median=60)
    done = read_after_truncation(
        f"""loader = streamtok.loader({str(tmp_path / "d")!r}, seq_len=64, batch_size=8, split="all", documents="pack",
                                  bos_id={BOS}, num_workers={workers}, epochs=None, metrics=False)""",
        "[os.truncate(p, 1024 + 2 * 1000) for p in loader.collator.reader.paths]", batches=5000)
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "the file changed" in done.stdout
