"""Remote sources: listing order, globs, splits, the environment chain, opening cost, the metadata cache."""

from __future__ import annotations

import numpy as np
import pytest
from s3_server import s3, s3_bucket  # noqa: F401

import streamtok
from streamtok import ShardLister
from streamtok._formats import write_shard
from streamtok.errors import ConfigError, ShardFormatError, ShardNotFoundError
from streamtok.storage.remote import forget_opened
from streamtok.storage.windows import coalesce


def _upload(server, bucket, tmp_path, names, n=600, prefix="p/"):
    rng = np.random.default_rng(0)
    for name in names:
        write_shard(tmp_path / "up" / name, rng.integers(0, 50000, n, dtype=np.uint16))
    server.upload_dir(tmp_path / "up", bucket, prefix)


def test_a_prefix_lists_in_natural_order_and_split_honours_val_names(s3_bucket, tmp_path):
    server, bucket = s3_bucket
    names = ["d_train_10.bin", "d_train_2.bin", "d_train_1.bin", "d_val_1.bin", "notes.txt", ".hidden.bin"]
    _upload(server, bucket, tmp_path, names[:4])
    server.upload(bucket, "p/notes.txt", b"hello")
    server.upload(bucket, "p/.hidden.bin", b"xx")
    server.upload(bucket, "p/sub/d_train_0.bin", b"xx")  # not directly under the prefix
    lister = ShardLister(f"s3://{bucket}/p/")
    base = f"s3://{bucket}/p/"
    assert lister.paths == tuple(base + n for n in ["d_train_1.bin", "d_train_2.bin", "d_train_10.bin", "d_val_1.bin"])
    assert lister.split("val").paths == (base + "d_val_1.bin",)
    assert lister.split("train").paths == tuple(base + n for n in ["d_train_1.bin", "d_train_2.bin", "d_train_10.bin"])
    # Without the slash, a name that is no object but has objects under it is a directory.
    assert ShardLister(f"s3://{bucket}/p").paths == lister.paths
    assert ShardLister(f"s3://{bucket}/p/*_train_*.bin").paths == lister.split("train").paths
    assert ShardLister(f"s3://{bucket}/p/d_train_2.bin").paths == (base + "d_train_2.bin",)
    with pytest.raises(ShardNotFoundError):
        ShardLister(f"s3://{bucket}/p/*_test_*.bin")
    with pytest.raises(ShardNotFoundError):
        ShardLister(f"s3://{bucket}/nothing/")


def test_a_litdata_prefix_is_refused(s3_bucket):
    server, bucket = s3_bucket
    server.upload(bucket, "lit/index.json", b"{}")
    server.upload(bucket, "lit/chunk-0-0.bin", b"\0" * 64)
    with pytest.raises(ShardFormatError, match="LitData"):
        ShardLister(f"s3://{bucket}/lit/")


def test_the_environment_alone_reaches_the_store(s3_bucket, tmp_path):
    server, bucket = s3_bucket  # s3_bucket set AWS_ENDPOINT_URL, keys, region, AWS_ALLOW_HTTP=true
    _upload(server, bucket, tmp_path, ["a_1.bin", "a_2.bin"])
    loader = streamtok.loader(f"s3://{bucket}/p/", seq_len=16, batch_size=4, split="all", metrics=False)
    assert sum(1 for _ in loader) == len(loader) > 0


def test_http_refused_without_allow_http(s3_bucket, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    _upload(server, bucket, tmp_path, ["a_1.bin"])
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    with pytest.raises(streamtok.StreamtokError):
        ShardLister(f"s3://{bucket}/p/")


def test_anonymous_access_to_a_public_bucket(s3, tmp_path, monkeypatch):  # noqa: F811
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    bucket = s3.create_bucket(public=True)
    write_shard(tmp_path / "x_1.bin", np.arange(500, dtype=np.uint16))
    s3.upload(bucket, "pub/x_1.bin", tmp_path / "x_1.bin", public=True)
    opts = {"endpoint": s3.endpoint, "region": "us-east-1", "allow_http": True, "anonymous": True}
    reader = streamtok.MemmapReader(f"s3://{bucket}/pub/x_1.bin", storage_options=opts)
    assert np.array_equal(reader.read(10, 20), np.arange(10, 20))


def test_opening_reads_headers_concurrently_and_a_restart_reads_none(s3_bucket, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    _upload(server, bucket, tmp_path, [f"s_{k}.bin" for k in range(24)], n=300)
    server.proxy.latency_s = 0.05
    url = f"s3://{bucket}/p/"
    first = streamtok.MemmapReader(url)
    c = server.proxy.counters
    # One LIST, then one GET per (small) shard for its header and both samples, many in flight at once.
    assert (c.lists, c.heads, c.range_gets) == (1, 0, 24)
    assert c.max_in_flight >= 16
    fingerprint = first.fingerprint
    server.proxy.reset()
    again = streamtok.MemmapReader(url)
    assert again.fingerprint == fingerprint and again.n_tokens == first.n_tokens
    assert (server.proxy.counters.requests, server.proxy.counters.lists) == (1, 1)  # the listing alone
    # A changed object (new ETag) is probed again, and only it.
    write_shard(tmp_path / "new.bin", np.arange(300, dtype=np.uint16))
    server.upload(bucket, "p/s_3.bin", tmp_path / "new.bin")
    server.proxy.reset()
    changed = streamtok.MemmapReader(url)
    assert server.proxy.counters.range_gets == 1
    assert changed.fingerprint != fingerprint
    assert np.array_equal(changed.read(int(changed.offsets[3]), int(changed.offsets[3]) + 5), np.arange(5))


def test_a_damaged_metadata_cache_is_checked_and_rewritten(s3_bucket, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    _upload(server, bucket, tmp_path, [f"s_{k}.bin" for k in range(4)], n=300)
    url = f"s3://{bucket}/p/"
    fingerprint = streamtok.MemmapReader(url).fingerprint
    (path,) = (tmp_path / "cache" / "remote-meta").iterdir()
    raw = path.read_bytes()
    assert raw.count(b"\n") >= 1 and len(raw) > 4 * 2 * 600  # a JSON line, then the samples' raw bytes
    path.write_bytes(raw[: -600 - 1])  # the last shard's sample cut short: that entry is not used
    server.proxy.reset()
    forget_opened()  # as a new process: only the file on disk remains
    assert streamtok.MemmapReader(url).fingerprint == fingerprint
    assert server.proxy.counters.range_gets == 1
    path.write_bytes(b"not json\n" + raw)  # unreadable: every shard is probed again, and the file rewritten
    server.proxy.reset()
    forget_opened()
    assert streamtok.MemmapReader(url).fingerprint == fingerprint
    assert server.proxy.counters.range_gets == 4 and path.read_bytes() == raw
    server.proxy.reset()
    forget_opened()
    assert streamtok.MemmapReader(url).fingerprint == fingerprint
    assert server.proxy.counters.range_gets == 0


@pytest.mark.parametrize("n_tokens, gets", [(300, 1), (36_864, 1), (36_865, 2), (60_000, 2)])
def test_a_small_shard_is_opened_in_one_get_a_large_one_in_two(s3_bucket, tmp_path, monkeypatch, n_tokens, gets):
    # 36,864 tokens: 73,728 + 1,024 bytes, the head (5,120) and tail (4,096) ranges exactly
    # OPEN_GAP (64 KiB) apart; one token more and the bytes between are not worth fetching.
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    _upload(server, bucket, tmp_path, ["s_1.bin"], n=n_tokens)
    server.proxy.reset()
    remote = streamtok.MemmapReader(f"s3://{bucket}/p/")
    c = server.proxy.counters
    assert (c.lists, c.heads, c.range_gets) == (1, 0, gets)
    spans = sorted((int(a), int(b)) for _, _, r in c.log if r for a, b in [r[len("bytes="):].split("-")])
    size = 1024 + 2 * n_tokens
    assert spans == ([(0, size - 1)] if gets == 1 else [(0, 5119), (size - 4096, size - 1)])
    local = streamtok.MemmapReader(str(tmp_path / "up"))
    assert remote.fingerprint == local.fingerprint and remote.infos[0].n_tokens == n_tokens


def test_an_explicit_list_of_urls_is_opened_without_heads_and_checked_by_head_on_a_restart(s3_bucket, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    _upload(server, bucket, tmp_path, ["a_1.bin", "a_2.bin", "a_3.bin"], n=500)
    _upload(server, bucket, tmp_path, ["a_4.bin"], n=60_000)  # past FIRST_BYTES: its tail is a second GET
    urls_ = [f"s3://{bucket}/p/a_{k}.bin" for k in range(1, 5)]
    server.proxy.reset()
    forget_opened()
    cold = streamtok.MemmapReader(urls_)
    c = server.proxy.counters
    # No HEAD: each first GET (no If-Match) told the size and ETag; the large shard's tail GET carries it.
    assert (c.lists, c.heads, c.range_gets) == (0, 0, 5)
    local = streamtok.MemmapReader(sorted(str(p) for p in (tmp_path / "up").iterdir()))
    assert cold.fingerprint == local.fingerprint and cold.n_tokens == local.n_tokens
    assert np.array_equal(cold.read(0, cold.n_tokens), local.read(0, local.n_tokens))
    for again in (False, True):  # in this process (memo), then as a new one (the metadata cache)
        if again:
            forget_opened()
        server.proxy.reset()
        assert streamtok.MemmapReader(urls_).fingerprint == cold.fingerprint
        assert (server.proxy.counters.heads, server.proxy.counters.range_gets) == (4, 0)  # checked, not read
    server.proxy.reset()
    forget_opened()
    with pytest.raises(ShardNotFoundError, match="no_such.bin"):
        streamtok.MemmapReader([*urls_, f"s3://{bucket}/p/no_such.bin"])
    server.upload(bucket, "p/empty.bin", b"")  # no byte 0 to range over: S3 answers 416, not a size
    with pytest.raises(ShardFormatError, match="empty.bin: the shard is empty"):
        streamtok.MemmapReader([*urls_, f"s3://{bucket}/p/empty.bin"])


def test_coalescing_only_merges_small_gaps():
    ranges = [(0, 0, 100), (0, 120, 220), (0, 10_000, 10_100), (1, 0, 100), (0, 230, 330)]
    requests, where = coalesce(ranges, max_gap=1 << 16, max_request=1 << 20)
    assert requests == [(0, 0, 330), (0, 10_000, 10_100), (1, 0, 100)]
    assert where == [(0, 0), (0, 120), (1, 0), (2, 0), (0, 230)]
    fetched = sum(b - a for _, a, b in requests)
    assert fetched <= 1.5 * sum(b - a for _, a, b in ranges)


def test_random_windows_fetch_at_most_one_and_a_half_bytes_per_byte_used(s3_bucket, tmp_path):
    server, bucket = s3_bucket
    write_shard(tmp_path / "big" / "one.bin", np.random.default_rng(1).integers(0, 50000, 120_000, dtype=np.uint16))
    server.upload_dir(tmp_path / "big", bucket, "big/")
    loader = streamtok.loader(f"s3://{bucket}/big/", seq_len=255, batch_size=16, split="all", mode="random",
                              epochs=1, metrics=False)
    server.proxy.reset()
    n = sum(1 for _ in loader)
    used = n * 16 * 256 * 2
    c = server.proxy.counters
    assert 0.5 * used <= c.body_bytes <= 1.5 * used  # overlapping random windows share bytes
    assert c.range_gets >= n * 8  # not merged into a few big GETs
    assert max(int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) for _, _, r in c.log if r) < 64 * 1024


def test_strategy_options(s3_bucket, tmp_path):
    server, bucket = s3_bucket
    _upload(server, bucket, tmp_path, ["a_1.bin"])
    url = f"s3://{bucket}/p/"
    with pytest.raises(ConfigError, match="fetch must be one of"):
        streamtok.MemmapReader(url, fetch="lru")
    with pytest.raises(ConfigError, match="fetch='blocks'"):
        streamtok.MemmapReader(url, cache_limit=1 << 20)
    with pytest.raises(ConfigError, match="fetch must be one of"):
        streamtok.MemmapReader(tmp_path / "up", fetch="lru")


def test_inspect_reads_remote_shards_as_it_reads_local_ones(s3_bucket, tmp_path, capsys, monkeypatch):
    import json

    from prep_helpers import run_cli

    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    server, bucket = s3_bucket
    rng = np.random.default_rng(4)
    t = rng.integers(0, 50000, 3000, dtype=np.uint16)
    t[::97] = 50256
    write_shard(tmp_path / "i" / "x_train_1.bin", t)
    write_shard(tmp_path / "i" / "x_train_2.npy", t[:1000])
    t[5] = 60000
    write_shard(tmp_path / "i" / "x_train_3.bin", t)
    server.upload_dir(tmp_path / "i", bucket, "i/")
    args = ["--json", "--sha256", "--check", "--encoding", "gpt2"]
    assert run_cli(["inspect", f"s3://{bucket}/i/", *args]) == 1
    remote = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert run_cli(["inspect", str(tmp_path / "i"), *args]) == 1
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.pop("path") for r in remote] == [f"s3://{bucket}/i/x_train_{k}.{e}" for k, e in ((1, "bin"), (2, "npy"), (3, "bin"))]
    for r in local:
        r.pop("path")
    assert remote == local and remote[2]["first_bad_offset"] == 5


def test_windows_are_requested_steps_ahead_with_many_in_flight(s3_bucket, tmp_path):
    server, bucket = s3_bucket
    write_shard(tmp_path / "w" / "one.bin", np.random.default_rng(2).integers(0, 50000, 60_000, dtype=np.uint16))
    server.upload_dir(tmp_path / "w", bucket, "w/")
    loader = streamtok.loader(f"s3://{bucket}/w/", seq_len=63, batch_size=4, split="all", metrics=False, lookahead=16)
    server.proxy.reset()
    server.proxy.latency_s = 0.02
    it = iter(loader)
    next(it)
    # One batch used, but the windows of the next 16 steps were asked for already, concurrently.
    assert len(loader.collator.reader.remote.fetcher._pending) == 16
    assert server.proxy.counters.range_gets >= 4  # the first step's, at least, and
    assert server.proxy.counters.max_in_flight >= 8  # requests of several steps at once
    it.close()


def test_torchdata_nodes_read_remote_shards(s3_bucket, tmp_path):
    from torchdata import nodes

    from streamtok.nodes import BatchNode, WindowNode

    server, bucket = s3_bucket
    _upload(server, bucket, tmp_path, ["a_1.bin", "a_2.bin"], n=3000)
    remote = streamtok.MemmapReader(f"s3://{bucket}/p/")
    local = streamtok.MemmapReader(tmp_path / "up")

    def batches(reader):
        return [x for x, _ in nodes.Loader(BatchNode(WindowNode(reader, seq_len=31, seed=0), 4))]

    got, want = batches(remote), batches(local)
    assert len(got) == len(want) > 0 and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_a_mixture_opens_each_remote_shard_once(s3_bucket, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    _upload(server, bucket, tmp_path, ["a_1.bin", "b_1.bin"], n=900)
    server.proxy.reset()
    loader = streamtok.loader({"a": f"s3://{bucket}/p/a_1.bin", "b": f"s3://{bucket}/p/b_1.bin"}, weights={"a": 1, "b": 1},
                              seq_len=16, batch_size=2, split="all", metrics=False, lookahead=0)
    c = server.proxy.counters
    # Per shard (an explicit URL): a HEAD of it and of its would-be Megatron .idx when the source
    # is listed, then one GET of the (small) shard once; the joint reader of the mixture asks nothing.
    assert (c.heads, c.range_gets) == (4, 2)
    assert loader.collator.reader.n_tokens == 1800
