"""Shards changed under a loader: rewritten in place, replaced, deleted. An error naming the file,
never a byte of the new file in a batch, never a SIGBUS (issue 19, items 2, 10 and 12)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _util import make_shards

import streamtok
from streamtok import ShardFormatError, ShardNotFoundError
from streamtok._formats import write_shard

MARK = 60_000  # every token of the rewritten file; the original shards hold 0..n-1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_same_size_rewrite_mid_run_is_refused_before_its_bytes_reach_a_batch(tmp_path, workers):
    make_shards(tmp_path / "d", [20_000, 20_000], dtype=np.uint16)
    new = tmp_path / "new.bin"
    write_shard(new, np.full(20_000, MARK, dtype=np.uint16))  # same size as each shard
    loader = streamtok.loader(
        tmp_path / "d", seq_len=64, batch_size=8, split="all", mode="sequential", num_workers=workers,
        epochs=None, metrics=False,
    )
    victim = loader.collator.reader.paths[0]
    it = iter(loader)
    seen = [next(it) for _ in range(3)]
    shutil.copyfile(new, victim)  # `cp new.bin shard.bin`: truncate, then write in place
    with pytest.raises(ShardFormatError, match=r"shard_000000\.bin: the file changed .*rewritten in place"):
        for _ in range(100):
            seen.append(next(it))
    assert all(int(x.max()) < 40_000 and int(y.max()) < 40_000 for x, y in seen)  # no new byte


@pytest.mark.parametrize("documents", ["mask", "pack"])
def test_a_same_size_rewrite_is_refused_in_document_modes(tmp_path, documents):
    tokens = (np.arange(20_000) % 1000).astype(np.uint16)
    tokens[::97] = 50256  # GPT-2's end-of-text: documents of 97 tokens
    for k in range(2):
        write_shard(tmp_path / "d" / f"s_{k:06d}.bin", tokens)
    new = tokens.copy()
    new[new != 50256] = MARK
    write_shard(tmp_path / "new.bin", new)
    loader = streamtok.loader(tmp_path / "d", seq_len=64, batch_size=8, split="all", documents=documents, metrics=False)
    it = iter(loader)
    seen = [next(it)[0] for _ in range(2)]
    for path in loader.collator.reader.paths:
        shutil.copyfile(tmp_path / "new.bin", path)
    with pytest.raises(ShardFormatError, match=r"s_00000[01]\.bin: the file changed .*rewritten in place"):
        for _ in range(100):
            seen.append(next(it)[0])
    assert all(int(x.max()) < MARK for x in seen)


def test_a_shard_replaced_between_passes_is_refused_by_new_workers(tmp_path):
    make_shards(tmp_path / "d", [5000, 5000], dtype=np.uint16)
    loader = streamtok.loader(tmp_path / "d", seq_len=32, batch_size=4, split="all", num_workers=2, metrics=False)
    assert len(list(loader)) > 0
    victim = loader.collator.reader.paths[1]
    write_shard(victim, np.full(5000, MARK, dtype=np.uint16))  # temp + rename: a new inode
    with pytest.raises(ShardFormatError, match=r"shard_000001\.bin: the file changed since the reader opened it: it was replaced"):
        list(loader)  # non-persistent workers open the files again


def test_a_shard_deleted_between_passes_is_named(tmp_path):
    make_shards(tmp_path / "d", [5000, 5000], dtype=np.uint16)
    loader = streamtok.loader(tmp_path / "d", seq_len=32, batch_size=4, split="all", num_workers=2, metrics=False)
    list(loader)
    os.unlink(loader.collator.reader.paths[1])
    with pytest.raises(ShardNotFoundError, match=r"shard_000001\.bin: the shard was deleted after the loader was built"):
        list(loader)


_STRESS = """
import os, sys, time
import numpy as np
import streamtok
path, stop, limit, ready = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
batches = errors = switches = 0
t_end = time.monotonic() + limit
while time.monotonic() < t_end and not os.path.exists(stop):
    try:
        loader = streamtok.loader(path, seq_len=1024, batch_size=64, split="all", mode="random",
                                  num_workers=0, epochs=None, metrics=False)
        pattern = None
        for x, _ in loader:
            d = np.diff(x.numpy().astype(np.int64), axis=1)
            kinds = {int(np.sign(np.median(row))) for row in d}
            if len(kinds) != 1 or (pattern is not None and kinds != pattern):
                switches += 1  # a batch of both files, or another file than the reader's
            pattern = kinds
            batches += 1
            if batches == 1:
                open(ready, "w").close()
            if time.monotonic() > t_end or os.path.exists(stop):
                break
    except streamtok.StreamtokError:
        errors += 1
print(batches, errors, switches)
"""


def test_repeated_copying_under_a_loader_never_kills_it_with_sigbus(tmp_path):
    n = 2_000_000  # 4 MB: a copy leaves the file short for long enough to meet a read
    i = np.arange(n, dtype=np.int64) % 40_000
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    write_shard(a, (1000 + i).astype(np.uint16))  # rows rise
    write_shard(b, (41_000 - i).astype(np.uint16))  # rows fall
    data = tmp_path / "data"
    data.mkdir()
    shard = data / "train.bin"
    shutil.copyfile(a, shard)
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", _STRESS, str(shard), str(stop), "60", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        copies = 0
        while not ready.exists() and child.poll() is None:  # the child has imported torch and read
            time.sleep(0.01)
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end and child.poll() is None:
            shutil.copyfile(b if copies % 2 == 0 else a, shard)  # in place, as cp does
            copies += 1
            time.sleep(0.005)
        stop.touch()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != -signal.SIGBUS, "the loader died of SIGBUS"
    assert child.returncode == 0, (child.returncode, err[-2000:])
    batches, errors, switches = map(int, out.split())
    assert copies > 10 and errors > 0 and batches > 0
    assert switches == 0  # no batch held bytes of a file other than the one its reader opened
