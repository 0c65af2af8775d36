"""The hit ratio is about the shard files only (issue 21, item 3).

With the shards whole in the page cache, a child of the trainer that reads another file
from disk (a checkpoint load, a tokenizer) made the monitor show a low hit ratio in red.
Ground truth here: the shards are resident (checked with the same residency probe), so
no shard page can come from disk and the true hit ratio is 100%.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from streamtok_monitor import probes
from streamtok_monitor.watcher import Sampler

import streamtok
from streamtok._formats import write_shard

READER = """
import os, sys, time
path, rate = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
t0, done = time.monotonic(), 0
while True:
    chunk = os.read(fd, 1 << 20)
    if not chunk:
        break
    done += len(chunk)
    ahead = done / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
"""


@pytest.fixture
def shard(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    path = tmp_path / "data" / "h_000.bin"
    write_shard(path, np.random.default_rng(2).integers(0, 50257, 1_000_000, dtype=np.uint16))
    with open(path, "rb") as f:  # warm: every page in the page cache
        f.read()
    return path


def test_other_files_read_by_a_child_do_not_make_a_low_shard_hit_ratio(shard, tmp_path):
    other = tmp_path / "checkpoint.bin"
    with open(other, "wb") as f:
        f.write(os.urandom(48 << 20))
        f.flush()
        os.fsync(f.fileno())  # clean pages: the child's DONTNEED drops them, its reads hit the disk
    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all", epochs=None)
    sampler = Sampler(run_dir=loader._metrics.dir)
    it = iter(loader)
    next(it)
    sampler.sample()
    child = subprocess.Popen([sys.executable, "-c", READER, str(other), str(20e6)])
    snaps = []
    try:
        while child.poll() is None and len(snaps) < 12:
            end = time.monotonic() + 0.25
            while time.monotonic() < end:
                next(it)
                time.sleep(0.002)
            snaps.append(sampler.sample())
    finally:
        child.kill()
        child.wait()
    assert probes.residency(str(shard)).fraction == 1.0  # the truth: no shard page was missed
    disk = sum(s["page_cache"]["disk_read_bytes"] for s in snaps)
    if disk <= 4 << 20:  # a filesystem that keeps the file cached anyway (tmpfs): nothing to tell apart
        pytest.skip("the child's reads did not reach the disk here")
    hits = [s["page_cache"]["hit_ratio"] for s in snaps if s["page_cache"]["page_bytes"] > 0]
    assert hits and all(h is None or h >= 0.9 for h in hits), hits
    assert all(s["page_cache"]["disk_reads_of"] == "none" for s in snaps)


def _sampler_with_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    path = tmp_path / "data" / "u_000.bin"
    write_shard(path, np.zeros(100_000, dtype=np.uint16))
    loader = streamtok.loader(path, seq_len=100, batch_size=4, split="all", epochs=None)
    return Sampler(run_dir=loader._metrics.dir), loader


def _round(sampler, resident: int, size: int, disk: int) -> str:
    sampler._shards = [{"size": size, "cached": resident}]
    return sampler._shard_reads(disk, True)


def test_reads_far_beyond_the_shards_residency_growth_make_the_hit_ratio_unknown(tmp_path, monkeypatch):
    sampler, _ = _sampler_with_shards(tmp_path, monkeypatch)
    mib = 1 << 20
    assert _round(sampler, 100 * mib, 1000 * mib, 0) == "shards"  # first round: part resident
    assert _round(sampler, 150 * mib, 1000 * mib, 60 * mib) == "shards"  # reads ~ growth: the shards'
    assert _round(sampler, 152 * mib, 1000 * mib, 400 * mib) == "others"  # 400 MiB read, 2 MiB grew
    assert sampler._shard_reads(0, False) == "others"  # holds until the next round
    assert _round(sampler, 1000 * mib, 1000 * mib, 10 * mib) == "shards"  # became whole: not yet sure
    assert _round(sampler, 1000 * mib, 1000 * mib, 300 * mib) == "none"  # whole at both rounds
