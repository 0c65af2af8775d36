"""https:// (served here as http:// on 127.0.0.1) and hf:// sources, offline."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from http_server import HUB_COMMIT, http_root  # noqa: F401

import streamtok
from streamtok._formats import write_shard
from streamtok.errors import ObjectChangedError


def _shards(root, names, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        write_shard(root / name, rng.integers(0, 50000, n, dtype=np.uint16))


def _same(a, b):
    got, want = list(a), list(b)
    assert len(got) == len(want) > 0
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(got, want))


def test_explicit_http_urls_read_like_local_files(http_root, tmp_path):
    _shards(http_root.root / "d", ["s_1.bin", "s_2.bin"])
    kw = dict(seq_len=16, batch_size=4, split="all", seed=3, metrics=False)
    urls = [f"{http_root.url}/d/s_1.bin", f"{http_root.url}/d/s_2.bin"]
    _same(streamtok.loader(urls, **kw), streamtok.loader([http_root.root / "d" / "s_1.bin", http_root.root / "d" / "s_2.bin"], **kw))
    assert any(r and r.startswith("bytes=") for _, _, r in http_root.log)


def test_a_changed_http_object_is_an_error(http_root):
    _shards(http_root.root / "d", ["s_1.bin"])
    loader = streamtok.loader([f"{http_root.url}/d/s_1.bin"], seq_len=16, batch_size=4, split="all", metrics=False, lookahead=0)
    it = iter(loader)
    next(it)
    _shards(http_root.root / "d", ["s_1.bin"], seed=9)  # same size, new version (new ETag)
    with pytest.raises(ObjectChangedError, match="s_1.bin"):
        for _ in it:
            pass


def _hub_env(monkeypatch, tmp_path, endpoint="http://127.0.0.1:9"):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_planted_secret_token_123")


def test_hf_prefix_over_ranged_http_in_natural_order(http_root, tmp_path, monkeypatch):
    _hub_env(monkeypatch, tmp_path, http_root.url)
    repo = http_root.root / "hub" / "owner" / "toks"
    _shards(repo / "data", ["t_train_10.bin", "t_train_2.bin", "t_val_1.bin"])
    lister = streamtok.ShardLister("hf://datasets/owner/toks/data/")
    assert [p.rsplit("/", 1)[1] for p in lister.paths] == ["t_train_2.bin", "t_train_10.bin", "t_val_1.bin"]
    kw = dict(seq_len=16, batch_size=4, seed=1, metrics=False)
    _same(streamtok.loader("hf://datasets/owner/toks/data/", **kw), streamtok.loader(repo / "data", **kw))
    _same(streamtok.loader("hf://datasets/owner/toks/data/*_val_*.bin", split="all", **kw),
          streamtok.loader(repo / "data" / "t_val_1.bin", split="all", **kw))
    # Read at the commit main named when listed (one ask per repo), never at the moving branch.
    assert all(f"@{HUB_COMMIT}/" in p for p in lister.paths)
    assert any(f"/resolve/{HUB_COMMIT}/data/" in p and r for _, p, r in http_root.log), http_root.log[:8]
    assert not [p for _, p, _ in http_root.log if "/resolve/main/" in p or "/tree/main" in p]
    assert len([p for _, p, _ in http_root.log if p.endswith("/revision/main")]) == 1


def test_a_branch_is_pinned_to_its_commit_once_per_build(http_root, tmp_path, monkeypatch):
    from streamtok.storage import hub, options, urls

    _hub_env(monkeypatch, tmp_path, http_root.url)
    _shards(http_root.root / "hub" / "owner" / "pins" / "d", ["p_train_1.bin"])
    opts = options.StorageOptions({})
    asks = lambda: len([p for _, p, _ in http_root.log if p.endswith("/revision/main")])  # noqa: E731
    u = urls.parse("hf://datasets/owner/pins/d/p_train_1.bin")
    assert hub.pin(u, opts).root == f"datasets/owner/pins@{HUB_COMMIT}" and hub.pin(u, opts).key == u.key
    assert asks() == 1  # a list of many URLs of one repo asks once
    monkeypatch.setattr(hub, "COMMIT_TTL_S", 0.0)
    hub.pin(u, opts)
    assert asks() == 2  # a loader built later sees where the branch is then
    at = urls.parse(f"hf://datasets/owner/pins@{'ab' * 20}/d/p_train_1.bin")
    assert hub.pin(at, opts) is at and asks() == 2  # a commit already: nothing to ask
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.pin(u, opts) is u and asks() == 2  # offline: the cache's own ref
    with pytest.raises(streamtok.ShardNotFoundError, match="no such repo or revision"):
        monkeypatch.delenv("HF_HUB_OFFLINE")
        hub.pin(urls.parse("hf://datasets/owner/absent/x.bin"), opts)


@pytest.mark.parametrize("single", [False, True])
def test_a_same_size_change_on_the_hub_is_a_named_error(http_root, tmp_path, monkeypatch, single):
    # Before: hf:// files were checked by size alone, and the new bytes were read as if nothing changed.
    _hub_env(monkeypatch, tmp_path, http_root.url)
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    repo = http_root.root / "hub" / "owner" / "ver"
    _shards(repo / "data", ["v_train_1.bin"], n=6000)
    source = "hf://datasets/owner/ver/data/" + ("v_train_1.bin" if single else "")
    loader = streamtok.loader(source, seq_len=16, batch_size=4, split="all", metrics=False, lookahead=0)
    blob = hashlib.sha1((repo / "data" / "v_train_1.bin").read_bytes()).hexdigest()
    it = iter(loader)
    next(it)
    _shards(repo / "data", ["v_train_1.bin"], n=6000, seed=9)  # same size, new bytes: a new blob id
    with pytest.raises(ObjectChangedError, match="v_train_1.bin"):
        for _ in it:
            pass
    ref = loader.collator.reader.remote.objects[0]
    assert ref.etag == f'"{blob}"' and ref.etag_in_reads  # the Hub's version (listing or file metadata)


def test_the_hub_version_of_a_file_keys_the_caches(http_root, tmp_path, monkeypatch):
    from streamtok.storage.remote import forget_opened

    _hub_env(monkeypatch, tmp_path, http_root.url)
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    repo = http_root.root / "hub" / "owner" / "vc"
    _shards(repo / "data", ["v_train_1.bin", "v_train_2.bin"], n=6000)
    url = "hf://datasets/owner/vc/data/"
    first = streamtok.MemmapReader(url)
    forget_opened()
    http_root.log.clear()
    assert streamtok.MemmapReader(url).fingerprint == first.fingerprint
    assert not [r for _, p, r in http_root.log if "/resolve/" in p]  # headers and samples from the metadata cache
    _shards(repo / "data", ["v_train_2.bin"], n=6000, seed=9)  # same size: a new version, probed again
    forget_opened()
    http_root.log.clear()
    assert streamtok.MemmapReader(url).fingerprint != first.fingerprint
    assert {p.rsplit("/", 1)[1] for _, p, r in http_root.log if "/resolve/" in p} == {"v_train_2.bin"}


def test_an_lfs_files_version_is_its_sha256_and_its_reads_are_not_checked_against_it(http_root, tmp_path, monkeypatch):
    # The bytes of an LFS file come from a CDN whose ETags are not the Hub's (here: the blob id):
    # comparing them with the sha256 would refuse every read.
    _hub_env(monkeypatch, tmp_path, http_root.url)
    repo = http_root.root / "hub" / "owner" / "big"
    _shards(repo / "lfs", ["b_train_1.bin", "b_train_2.bin"])
    loader = streamtok.loader("hf://datasets/owner/big/lfs/", seq_len=16, batch_size=4, split="all", seed=1, metrics=False)
    refs = loader.collator.reader.remote.objects
    sha = hashlib.sha256((repo / "lfs" / "b_train_1.bin").read_bytes()).hexdigest()
    assert refs[0].etag == f'"{sha}"' and not refs[0].etag_in_reads
    _same(loader, streamtok.loader(repo / "lfs", seq_len=16, batch_size=4, split="all", seed=1, metrics=False))


def test_hf_from_a_prepopulated_hub_cache_offline(tmp_path, monkeypatch):
    _hub_env(monkeypatch, tmp_path)  # an endpoint that answers nothing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "a" * 40
    snap = tmp_path / "hfcache" / "datasets--owner--toks" / "snapshots" / commit
    _shards(snap / "data", ["t_train_1.bin", "t_train_2.bin"])
    (tmp_path / "hfcache" / "datasets--owner--toks" / "refs").mkdir(parents=True)
    (tmp_path / "hfcache" / "datasets--owner--toks" / "refs" / "main").write_text(commit)
    kw = dict(seq_len=16, batch_size=4, seed=2, split="all", metrics=False)
    loader = streamtok.loader("hf://datasets/owner/toks/data/", **kw)
    assert loader.collator.reader.remote is None  # the cached files are read as local files
    _same(loader, streamtok.loader(snap / "data", **kw))


@pytest.mark.parametrize("url,opts", [
    ("gs://bucket/p/", {"anonymous": True, "endpoint": "http://127.0.0.1:9", "allow_http": True}),
    ("az://container/p/", {"account_name": "devstoreaccount1", "anonymous": True, "endpoint": "http://127.0.0.1:9",
                           "allow_http": True}),
])
def test_gs_and_az_reach_their_clients_and_fail_by_name(url, opts):
    with pytest.raises(streamtok.StreamtokError) as err:
        streamtok.ShardLister(url, storage_options={**opts, "retries": 0, "connect_timeout": "1s", "timeout": "2s"})
    assert url.rstrip("/") in str(err.value)


def test_url_parts():
    from streamtok.storage import urls

    assert urls.parse("s3://b/k/x.bin") == urls.Url("s3", "b", "k/x.bin")
    assert urls.parse("hf://datasets/o/n@v1/d/x.bin") == urls.Url("hf", "datasets/o/n@v1", "d/x.bin")
    assert urls.basename("https://h/a/b.bin?sig=abc") == "b.bin"
    assert urls.dirname("s3://b/k/x.bin") == "s3://b/k"
    assert not urls.is_remote("/tmp/x.bin") and not urls.is_remote("file://x") and urls.is_remote("az://c/x")
    assert urls.redact_queries("at https://h/a.bin?X-Amz-Signature=s3cr3t now") == "at https://h/a.bin?… now"


def test_redaction_of_secrets_and_url_userinfo(monkeypatch):
    from streamtok.storage import StorageOptions, redact

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    opts = StorageOptions({"secret_access_key": "given-secret-value", "region": "eu-west-1"})
    text = redact("a given-secret-value, an env-secret-value, http://me:pw@host:9000/b and eu-west-1")
    assert text == "a ***, an ***, http://***@host:9000/b and eu-west-1"
    assert "given-secret-value" not in repr(opts)
