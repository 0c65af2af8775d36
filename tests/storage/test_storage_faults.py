"""Faults are never data: transient failures are retried and counted, the rest raise named errors.

Each fault is injected by the loopback proxy (tests/s3_server.py) on the GETs of a running
loader; the batches must equal those of the same shards read locally, or the loader must
raise a StreamtokError naming the object and the byte range, never yield a partial batch.
Credentials (a planted secret) must appear in no state, metrics file, log or message.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch
from s3_server import SECRET_KEY, s3, s3_bucket  # noqa: F401

import streamtok
from streamtok._formats import write_shard
from streamtok.errors import ObjectChangedError, RemoteReadError, StorageError, StreamtokError

FAST = {"retry_base_s": 0.005, "retry_max_s": 0.02}


@pytest.fixture
def remote(s3_bucket, tmp_path):  # noqa: F811
    """``(server, local dir, url, storage_options)``: two shards, uploaded."""
    server, bucket = s3_bucket
    rng = np.random.default_rng(11)
    for k, n in enumerate([3000, 2600]):
        write_shard(tmp_path / "ds" / f"s_{k}.bin", rng.integers(0, 50000, n, dtype=np.uint16))
    server.upload_dir(tmp_path / "ds", bucket, "ds/")
    return server, tmp_path / "ds", f"s3://{bucket}/ds/", server.storage_options(**FAST)


def _batches(loader):
    return [torch.cat([x, y[:, -1:]], 1) for x, y in loader]


@pytest.mark.parametrize("fault", ["500", "503", "slowdown", "reset", "short", "timeout"])
def test_a_transient_fault_is_retried_and_counted(remote, fault):
    server, local, url, opts = remote
    kw = dict(seq_len=32, batch_size=4, seed=1, split="all", metrics=False)
    # A timeout fault hangs 3 s; the client gives up after 1.5 s (loose enough for a loaded machine).
    loader = streamtok.loader(url, storage_options={**opts, "timeout": "1500ms"}, **kw)
    server.proxy.hang_s = 3.0
    server.proxy.inject(fault, times=2, predicate=lambda m, p, h: "Range" in h or "range" in h)
    got = _batches(loader)
    want = _batches(streamtok.loader(local, **kw))
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert server.proxy.counters.faults == {fault: 2}
    stats = loader.collator.reader.remote.stats()
    assert stats["retries"] >= 2 and stats["failures"] == 0 and stats["in_flight"] == 0
    assert stats["used_bytes"] <= stats["fetched_bytes"] <= 1.5 * stats["used_bytes"]


def test_past_the_retry_bound_a_named_error_and_no_batch(remote):
    server, _, url, opts = remote
    loader = streamtok.loader(url, storage_options={**opts, "retries": 2}, seq_len=32, batch_size=4, split="all", metrics=False)
    server.proxy.inject("503", times=1000)
    seen = []
    with pytest.raises(RemoteReadError) as err:
        for batch in loader:
            seen.append(batch)
    assert seen == []
    msg = str(err.value)
    assert url in msg and "bytes [" in msg and "failed 3 times" in msg
    assert isinstance(err.value, StreamtokError)


def test_an_object_changed_under_the_loader_is_an_error(remote):
    server, _, url, opts = remote
    bucket_key = url.removeprefix("s3://")
    loader = streamtok.loader(url, storage_options=opts, seq_len=32, batch_size=4, split="all", metrics=False, lookahead=0)
    it = iter(loader)
    next(it)
    bucket, key = bucket_key.split("/", 1)
    # Same size, other tokens: only the ETag tells.
    same_size = np.random.default_rng(5).integers(0, 50000, 3000, dtype=np.uint16)
    write_shard(str(remote[1] / "new.bin"), same_size)
    server.upload(bucket, key + "s_0.bin", (remote[1] / "new.bin").read_bytes())
    server.upload(bucket, key + "s_1.bin", (remote[1] / "new.bin").read_bytes())
    with pytest.raises(ObjectChangedError, match="s_[01].bin"):
        for _ in it:
            pass


def test_a_missing_bucket_or_denied_access_is_a_named_error(remote):
    server, _, url, opts = remote
    with pytest.raises(StreamtokError):
        streamtok.loader(url.replace("s3://", "s3://no-such-bucket-xyz-"), storage_options=opts, seq_len=8, batch_size=2, metrics=False)


def test_credentials_never_appear_in_state_metrics_logs_or_messages(remote, tmp_path, monkeypatch, caplog):
    server, _, url, opts = remote
    run_dir = tmp_path / "runs"
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(run_dir))
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(var, raising=False)  # the secret comes only from storage_options here
    caplog.set_level(logging.DEBUG)
    loader = streamtok.loader(url, storage_options={**opts, "retries": 1}, seq_len=32, batch_size=4, split="all",
                              documents="mask", metrics=True)
    it = iter(loader)
    next(it)
    state = json.dumps(loader.state_dict())
    server.proxy.inject("500", times=1000)
    with pytest.raises(StorageError) as err:
        for _ in it:
            pass
    texts = [state, str(err.value), repr(err.value), caplog.text, repr(loader.collator.reader.remote.store.options)]
    # A failed open (no such bucket) with the secret in the options: its message does not carry it.
    server.proxy.clear_faults()
    with pytest.raises(StreamtokError) as denied:
        streamtok.loader(url.replace("s3://", "s3://missing-"), storage_options=opts, seq_len=8, batch_size=2,
                         split="all", metrics=False)
    texts += [str(denied.value)]
    for path in list(run_dir.rglob("*")) + list((tmp_path / "cache").rglob("*")):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    assert len(texts) > 5
    assert not [t for t in texts if SECRET_KEY in t]


def test_the_monitor_samples_a_remote_run_without_touching_the_store(remote, tmp_path, monkeypatch):
    from streamtok_monitor.snapshot import Sampler

    server, _, url, opts = remote
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    loader = streamtok.loader(url, storage_options=opts, seq_len=32, batch_size=4, split="all", metrics=True, lookahead=0)
    it = iter(loader)
    next(it)
    time.sleep(0.01)  # the meter stores its totals when the loop asks again, at most every 5 ms
    next(it)
    server.proxy.reset()  # no fetch ahead (lookahead=0): every request from now on would be the monitor's
    watch = Sampler(run_dir=loader._metrics.dir)
    snap = watch.sample()
    assert watch.pages is None and snap["throughput"]["batches"] >= 1
    assert server.proxy.counters.requests == 0  # the monitor sent nothing to the store
    it.close()


@pytest.mark.slow
def test_a_worker_forked_after_the_store_started_fails_fast_instead_of_hanging(remote):
    _, _, url, opts = remote
    loader = streamtok.loader(url, storage_options=opts, seq_len=32, batch_size=4, split="all", metrics=False,
                              num_workers=1, multiprocessing_context="fork", timeout=60)
    with pytest.raises(StorageError, match="forkserver"):
        next(iter(loader))


def test_without_obstore_a_remote_source_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "obstore.store", None)
    with pytest.raises(StorageError, match=r"streamtok\[remote\]"):
        streamtok.ShardLister("s3://bucket/prefix/", storage_options={"region": "us-east-1"})
