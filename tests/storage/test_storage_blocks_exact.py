"""fetch="blocks" gives the same batches, bit for bit, as the same shards on local disk.

The dataset and server are test_storage_exact's; blocks of 4 KiB in a cache of 6 blocks
(24 KiB against ~36 KB of shards) so that every test evicts and re-downloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from _util import TESTS
from s3_server import s3  # noqa: F401
from test_storage_exact import _rest, _same, data  # noqa: F401

import streamtok

BLOCK = 4096


def _blocks(opts, tmp_path, limit_blocks=6):
    return dict(storage_options={**opts, "block_bytes": BLOCK}, fetch="blocks",
                cache_dir=str(tmp_path / "blocks"), cache_limit=limit_blocks * BLOCK)


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential", "block_shuffle"])
def test_each_mode(data, mode, tmp_path):  # noqa: F811
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=8, mode=mode, seed=4, epochs=2 if mode == "shuffle" else 1, metrics=False)
    remote = streamtok.loader(url + "ds/", **_blocks(opts, tmp_path), **kw)
    local = streamtok.loader(root / "ds", **kw)
    assert _same(remote, local) == len(local)
    fetcher = remote.collator.reader.remote.fetcher
    assert fetcher.cache.usage() <= 6 * BLOCK
    assert fetcher.cache.counters.downloads > 0


@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_each_documents_mode(data, documents, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=4, seed=2, documents=documents, metrics=False)
    _same(streamtok.loader(url + "ds/", **_blocks(opts, tmp_path), **kw), streamtok.loader(root / "ds", **kw), 20)


def test_a_mixture_and_world_size_two(data, tmp_path):  # noqa: F811
    root, url, opts = data
    kw = dict(seq_len=16, batch_size=4, seed=1, weights={"a": 0.7, "b": 0.3}, metrics=False)
    remote = streamtok.loader({"a": url + "mix/a/", "b": url + "mix/b/"}, split="all", **_blocks(opts, tmp_path), **kw)
    local = streamtok.loader({"a": str(root / "mix" / "a"), "b": str(root / "mix" / "b")}, split="all", **kw)
    _same(remote, local, 30)
    for rank in (0, 1):
        kw = dict(seq_len=32, batch_size=4, seed=9, rank=rank, world_size=2, metrics=False)
        _same(streamtok.loader(url + "ds/", **_blocks(opts, tmp_path), **kw), streamtok.loader(root / "ds", **kw))


@pytest.mark.slow
def test_two_workers_share_one_cache(data, tmp_path):  # noqa: F811
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=8, seed=6, metrics=False)
    remote = streamtok.loader(url + "ds/", num_workers=2, **_blocks(opts, tmp_path), **kw)
    assert _same(remote, streamtok.loader(root / "ds", **kw)) == len(remote)
    names = os.listdir(tmp_path / "blocks" / "blocks")
    assert names and not any(n.endswith(".part") for n in names)


SCRIPT = """
import json, sys
import streamtok
from _util import batch_hash
url, state, opts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
loader = streamtok.loader(url, seq_len=32, batch_size=4, seed=7, metrics=False, mode="shuffle", epochs=1, **opts)
loader.load_state_dict(state)
print(json.dumps([batch_hash(x, y) for x, y in loader]))
print(loader.collator.reader.remote.fetcher.cache.counters.downloads)
"""


@pytest.mark.slow
def test_resumed_in_a_new_process_reuses_the_cache(data, s3, tmp_path):  # noqa: F811
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=4, seed=7, metrics=False, mode="shuffle", epochs=1)
    big = _blocks(opts, tmp_path, limit_blocks=64)  # holds the whole dataset
    first = streamtok.loader(url + "ds/", **big, **kw)
    it = iter(first)
    for _ in range(4):
        next(it)
    it.close()
    state = first.state_dict()
    assert _rest(streamtok.loader(url + "ds/", **big, **kw), state) == _rest(streamtok.loader(root / "ds", **kw), state)
    expected = _rest(streamtok.loader(root / "ds", **kw), state)
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, url + "ds/", json.dumps(state), json.dumps(big)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    hashes, downloads = out.stdout.strip().splitlines()[-2:]
    assert json.loads(hashes) == expected
    assert int(downloads) == 0  # every block was already in the node's cache


@pytest.mark.parametrize("fetch", ["windows", "blocks"])
def test_the_metrics_hold_the_network_and_cache_totals(data, fetch, tmp_path):  # noqa: F811
    from streamtok.metrics import publish as metrics

    _, url, opts = data
    kw = _blocks(opts, tmp_path) if fetch == "blocks" else dict(storage_options=opts)
    loader = streamtok.loader(url + "ds/", seq_len=32, batch_size=8, seed=3, **kw)
    n = sum(1 for _ in loader)
    slot = metrics.StatsReader(loader._metrics.dir).slot(0)
    assert slot["batches"] == n
    assert slot["net_requests"] > 0 and slot["net_bytes"] >= n * 8 * 33 * 2
    assert slot["net_in_flight"] >= 0 and slot["net_retries"] == 0 and slot["net_wait_ns"] > 0
    if fetch == "blocks":
        assert slot["cache_hits"] > 0 and 0 < slot["cache_bytes"] <= 6 * BLOCK
    else:
        assert slot["cache_hits"] == 0 and slot["cache_bytes"] == 0


def test_a_failure_past_the_retries_is_an_error_not_a_cached_block(data, s3, tmp_path):  # noqa: F811
    from streamtok.errors import StreamtokError

    _, url, opts = data
    kw = _blocks({**opts, "retries": 1, "retry_base_s": 0.01}, tmp_path)
    loader = streamtok.loader(url + "ds/", seq_len=32, batch_size=8, seed=3, metrics=False, **kw)
    s3.proxy.inject("500", times=1000, match="/ds/")
    try:
        with pytest.raises(StreamtokError, match="ds/"):
            next(iter(loader))
    finally:
        s3.proxy.clear_faults()
    blocks = tmp_path / "blocks" / "blocks"
    # Prefetches of other blocks still in flight when the error came end on their own (their
    # .part files are removed as they fail); none may be published.
    deadline = time.monotonic() + 10
    while any(n.endswith(".part") for n in os.listdir(blocks)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(n.endswith(".part") for n in os.listdir(blocks))
    assert all(p.stat().st_size for p in blocks.iterdir())  # nothing empty or partial was published


def test_block_shuffle_downloads_each_block_about_once_per_epoch(data, tmp_path, monkeypatch):  # noqa: F811
    """Groups of ~one 1 KiB block, pools of 4, a cache of 8 blocks: block_shuffle downloads
    each block once or twice per epoch; the exact shuffle through the same cache, many times
    (measured here: 47 and 334 downloads of 34 blocks)."""
    from streamtok import _order

    monkeypatch.setattr(_order, "BLOCK_TOKENS", 512)  # 1 KiB of uint16: 15 windows of 33 tokens
    monkeypatch.setattr(_order, "POOL_BLOCKS", 4)
    root, url, opts = data
    n_blocks = sum(-(-p.stat().st_size // 1024) for p in (root / "ds").glob("*_train_*"))
    downloads = {}
    for mode in ("block_shuffle", "shuffle"):
        kw = dict(storage_options={**opts, "block_bytes": 1024}, fetch="blocks", cache_dir=str(tmp_path / mode),
                  cache_limit=8 * 1024)
        remote = streamtok.loader(url + "ds/", seq_len=32, batch_size=8, mode=mode, seed=5, metrics=False, **kw)
        local = streamtok.loader(root / "ds", seq_len=32, batch_size=8, mode=mode, seed=5, metrics=False)
        _same(remote, local)
        downloads[mode] = remote.collator.reader.remote.fetcher.cache.counters.downloads
    assert downloads["block_shuffle"] <= 2.2 * n_blocks
    assert downloads["shuffle"] > 2 * downloads["block_shuffle"]
