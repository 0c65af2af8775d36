"""gs:// and az:// against real emulators on 127.0.0.1 (tests/cloud_emulators.py).

GCS: fake-gcs-server (installed by ``.[dev]``). Azure: Azurite, when installed (npm only;
skipped with the reason otherwise). Each test runs against both: a listing in natural order,
a glob, ``split=``, one object, the same batches as local disk with either read strategy, a
changed object as a named error, and the credentials in no state, metrics file, cache or message.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from _util import same_batches
from cloud_emulators import AZ_KEY, AZ_SECRET, azurite, gcs  # noqa: F401

import streamtok
from streamtok import ShardLister
from streamtok._formats import write_shard
from streamtok.errors import ObjectChangedError, ShardNotFoundError, StreamtokError

EOT = 50256


@pytest.fixture(params=["gs", "az"])
def cloud(request, tmp_path, monkeypatch):
    """``(server, scheme, bucket, storage_options)``: a fresh bucket (container) on one emulator."""
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    if request.param == "gs":
        server = request.getfixturevalue("gcs")
        return server, "gs", server.create_bucket(), server.storage_options()
    server = request.getfixturevalue("azurite")
    return server, "az", server.create_container(), server.storage_options()


def _tokens(rng, n):
    t = rng.integers(0, 50000, n, dtype=np.uint16)
    t[rng.random(n) < 0.01] = EOT
    t[0] = EOT
    return t


def _dataset(root, seed=0):
    rng = np.random.default_rng(seed)
    for name, n in (("d_train_10.bin", 3000), ("d_train_2.bin", 2500), ("d_train_1.bin", 4100), ("d_val_1.bin", 1500)):
        write_shard(root / name, _tokens(rng, n))
    return root


_same = same_batches


def test_a_prefix_lists_in_natural_order_a_glob_a_split_and_one_object(cloud, tmp_path):
    server, scheme, bucket, opts = cloud
    server.upload_dir(_dataset(tmp_path / "ds"), bucket, "p/")
    server.upload(bucket, "p/notes.txt", b"hello")
    server.upload(bucket, "p/.hidden.bin", b"xx")
    server.upload(bucket, "p/sub/d_train_0.bin", b"xx")  # not directly under the prefix
    base = f"{scheme}://{bucket}/p/"
    lister = ShardLister(base, storage_options=opts)
    assert lister.paths == tuple(base + n for n in ["d_train_1.bin", "d_train_2.bin", "d_train_10.bin", "d_val_1.bin"])
    assert lister.split("val").paths == (base + "d_val_1.bin",)
    assert ShardLister(base + "*_train_*.bin", storage_options=opts).paths == lister.split("train").paths
    assert ShardLister(base.rstrip("/"), storage_options=opts).paths == lister.paths  # no object there: a directory
    assert ShardLister(base + "d_train_2.bin", storage_options=opts).paths == (base + "d_train_2.bin",)
    with pytest.raises(ShardNotFoundError):
        ShardLister(base + "*_test_*.bin", storage_options=opts)
    with pytest.raises(ShardNotFoundError):
        ShardLister(f"{scheme}://{bucket}/nothing/", storage_options=opts)


@pytest.mark.parametrize("fetch", ["windows", "blocks"])
def test_the_same_batches_as_local_disk(cloud, tmp_path, fetch):
    server, scheme, bucket, opts = cloud
    local = _dataset(tmp_path / "ds", seed=1)
    server.upload_dir(local, bucket, "ds/")
    extra = dict(fetch="blocks", cache_dir=str(tmp_path / "blocks"), cache_limit=6 * 4096) if fetch == "blocks" else {}
    opts = {**opts, "block_bytes": 4096} if fetch == "blocks" else opts
    url = f"{scheme}://{bucket}/ds/"
    for kw in (dict(seq_len=32, batch_size=8, seed=4, mode="shuffle", epochs=2),
               dict(seq_len=32, batch_size=4, seed=2, documents="mask", split="val")):
        remote = streamtok.loader(url, storage_options=opts, metrics=False, **extra, **kw)
        here = streamtok.loader(local, metrics=False, **kw)
        assert remote.collator.reader.fingerprint == here.collator.reader.fingerprint
        assert _same(remote, here) == len(here)
    # Through the explicit URLs too (each opened by one GET, no listing).
    names = ["d_train_1.bin", "d_train_2.bin"]
    kw = dict(seq_len=16, batch_size=4, seed=3, split="all", metrics=False)
    _same(streamtok.loader([url + n for n in names], storage_options=opts, **extra, **kw),
          streamtok.loader([local / n for n in names], **kw))


def test_a_changed_object_is_a_named_error(cloud, tmp_path):
    # fake-gcs-server ignores If-Match: the ETag of each GET's answer is checked as well.
    server, scheme, bucket, opts = cloud
    rng = np.random.default_rng(5)
    write_shard(tmp_path / "s_1.bin", rng.integers(0, 50000, 4000, dtype=np.uint16))
    server.upload(bucket, "c/s_1.bin", (tmp_path / "s_1.bin").read_bytes())
    loader = streamtok.loader(f"{scheme}://{bucket}/c/", storage_options=opts, seq_len=16, batch_size=4, split="all",
                              metrics=False, lookahead=0)
    it = iter(loader)
    next(it)
    write_shard(tmp_path / "s_1.bin", rng.integers(0, 50000, 4000, dtype=np.uint16))  # same size, new content
    server.upload(bucket, "c/s_1.bin", (tmp_path / "s_1.bin").read_bytes())
    with pytest.raises(ObjectChangedError, match="s_1.bin"):
        for _ in it:
            pass


def _planted_gcs_key() -> tuple[str, str]:
    """A service-account key (a fresh RSA key, never sent anywhere: reads are unsigned) and a
    line of its private key to grep for."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key = json.dumps({"type": "service_account", "project_id": "streamtok-test", "private_key_id": "k1",
                      "private_key": pem, "client_email": "reader@streamtok-test.iam.gserviceaccount.com",
                      "token_uri": "http://127.0.0.1:9/token"})
    return key, pem.splitlines()[3]


def test_credentials_never_appear_in_state_metrics_caches_or_messages(cloud, tmp_path, monkeypatch, caplog):
    server, scheme, bucket, opts = cloud
    if scheme == "gs":
        key, line = _planted_gcs_key()
        opts = {**opts, "service_account_key": key}
        secrets = [key, line]
    else:  # Azurite checks every request's signature, made with this key
        assert opts["secret_access_key"] == AZ_KEY
        secrets = [AZ_KEY, AZ_SECRET]
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    caplog.set_level(logging.DEBUG)
    server.upload_dir(_dataset(tmp_path / "ds"), bucket, "k/")
    url = f"{scheme}://{bucket}/k/"
    loader = streamtok.loader(url, storage_options=opts, seq_len=32, batch_size=4, split="all", documents="mask",
                              fetch="blocks", cache_dir=str(tmp_path / "blocks"), metrics=True)
    it = iter(loader)
    for _ in range(3):
        next(it)
    texts = [json.dumps(loader.state_dict()), caplog.text, repr(loader.collator.reader.remote.store.options)]
    for missing in (f"{scheme}://no-such-{bucket}/k/", url + "no_such.bin"):
        with pytest.raises(StreamtokError) as err:
            streamtok.loader(missing, storage_options={**opts, "retries": 0}, seq_len=8, batch_size=2, split="all",
                             metrics=False)
        texts += [str(err.value), repr(err.value)]
    it.close()
    for path in tmp_path.rglob("*"):
        if path.is_file() and "ds" not in path.parts:
            texts.append(path.read_bytes().decode("latin-1"))
    assert len(texts) > 8
    assert not [t for t in texts if any(s in t for s in secrets)]


def test_gcs_storage_emulator_host_alone_reaches_the_emulator(gcs, tmp_path, monkeypatch):  # noqa: F811
    # The variable Google's clients read for an emulator: no storage_options needed.
    bucket = gcs.create_bucket()
    gcs.upload_dir(_dataset(tmp_path / "ds"), bucket, "e/")
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint.removeprefix("http://"))  # host:port means http
    lister = ShardLister(f"gs://{bucket}/e/")
    assert [p.rsplit("/", 1)[1] for p in lister.paths] == ["d_train_1.bin", "d_train_2.bin", "d_train_10.bin", "d_val_1.bin"]
    kw = dict(seq_len=16, batch_size=4, split="all", seed=2, metrics=False)
    _same(streamtok.loader(f"gs://{bucket}/e/", **kw), streamtok.loader(tmp_path / "ds", **kw))
