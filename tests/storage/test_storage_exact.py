"""Remote shards give the same batches, bit for bit, as the same shards on local disk.

Every test reads one dataset twice: from a directory, and from the loopback S3 server
(tests/s3_server.py) after uploading that directory. Modes, documents= modes, a mixture,
workers, world sizes and resumes (in this process, in a new one, 2 -> 1 ranks, and a state
moved between local and remote data) are compared batch by batch.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _util import TESTS, batch_hash, same_batches
from s3_server import s3  # noqa: F401

import streamtok
from streamtok._formats import write_shard

EOT = 50256


def _tokens(rng: np.random.Generator, n: int) -> np.ndarray:
    t = rng.integers(0, 50000, n, dtype=np.uint16)
    t[rng.random(n) < 0.01] = EOT  # documents of ~100 tokens
    t[0] = EOT
    return t


@pytest.fixture(scope="module")
def data(s3, tmp_path_factory):  # noqa: F811
    """``(local dir, s3 prefix URL, storage_options)``: four GPT-2 shards, one named val."""
    root = tmp_path_factory.mktemp("exact")
    rng = np.random.default_rng(3)
    for k, n in enumerate([6000, 4100, 5003]):
        write_shard(root / "ds" / f"fw_train_{k:06d}.bin", _tokens(rng, n))
    write_shard(root / "ds" / "fw_val_000000.bin", _tokens(rng, 3000))
    for name, n in (("a", 3000), ("b", 2500)):
        write_shard(root / "mix" / name / f"{name}_000000.bin", _tokens(rng, n))
    s3.proxy.reset()
    bucket = s3.create_bucket()
    s3.upload_dir(root / "ds", bucket, "ds/")
    s3.upload_dir(root / "mix", bucket, "mix/")
    return root, f"s3://{bucket}/", s3.storage_options()


_same = same_batches


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
def test_each_mode_and_the_val_split(data, mode):
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=8, mode=mode, seed=4, metrics=False)
    for split in ("train", "val"):
        remote = streamtok.loader(url + "ds/", split=split, storage_options=opts, **kw)
        local = streamtok.loader(root / "ds", split=split, **kw)
        assert [os.path.basename(p) for p in remote.collator.reader.paths] == [os.path.basename(p) for p in local.collator.reader.paths]
        assert remote.collator.reader.fingerprint == local.collator.reader.fingerprint
        assert _same(remote, local) == len(local)


@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_each_documents_mode(data, documents, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=4, seed=2, documents=documents, metrics=False)
    remote = streamtok.loader(url + "ds/", storage_options=opts, **kw)
    local = streamtok.loader(root / "ds", **kw)
    _same(remote, local, 20)
    # The index was built once and cached locally: a new loader reads it from the cache.
    assert list((tmp_path / "cache" / "remote").glob("*.npy"))


def test_pack_fetches_the_pieces_of_coming_steps_ahead(data, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=4, seed=2, documents="pack", metrics=False)
    remote = streamtok.loader(url + "ds/", storage_options=opts, lookahead=8, **kw)
    it = iter(remote)
    first = next(it)
    fetcher = remote.collator.reader.remote.fetcher
    assert len(fetcher._pending) == 8  # one step read, the pieces of the next 8 asked for already
    n = _same(itertools.chain([first], it), streamtok.loader(root / "ds", **kw))
    assert n == len(remote) > 8
    assert not fetcher._pending  # every step read was one announced ahead (same key): nothing left over


def test_a_glob_and_a_mixture_of_remote_and_local(data):
    root, url, opts = data
    kw = dict(seq_len=16, batch_size=4, seed=1, weights={"a": 0.7, "b": 0.3}, metrics=False)
    remote = streamtok.loader({"a": url + "mix/a/*_000000.bin", "b": str(root / "mix" / "b")}, split="all",
                              storage_options=opts, **kw)
    local = streamtok.loader({"a": str(root / "mix" / "a"), "b": str(root / "mix" / "b")}, split="all", **kw)
    _same(remote, local, 30)


def test_a_local_shard_beside_remote_ones_is_checked_as_a_local_loader_checks_it(data, tmp_path):
    """A same-size rewrite of the local source of a remote+local mixture is refused, never read."""
    import shutil

    from streamtok.errors import ShardFormatError

    root, url, opts = data
    local = tmp_path / "b"
    shutil.copytree(root / "mix" / "b", local)
    kw = dict(seq_len=16, batch_size=4, seed=1, weights={"a": 0.5, "b": 0.5}, metrics=False, split="all", epochs=None)
    loader = streamtok.loader({"a": url + "mix/a/", "b": str(local)}, storage_options=opts, **kw)
    it = iter(loader)
    next(it)
    shard = local / "b_000000.bin"
    shard.write_bytes(shard.read_bytes()[:1024] + bytes(shard.stat().st_size - 1024))  # same size, new tokens
    with pytest.raises(ShardFormatError, match="b_000000.bin"):
        for _ in range(50):
            next(it)


@pytest.mark.parametrize("rank", [0, 1])
def test_world_size_two(data, rank):
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=4, seed=9, rank=rank, world_size=2, metrics=False)
    _same(streamtok.loader(url + "ds/", storage_options=opts, **kw), streamtok.loader(root / "ds", **kw))


@pytest.mark.slow
def test_two_workers(data):
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=8, seed=6, metrics=False)
    remote = streamtok.loader(url + "ds/", storage_options=opts, num_workers=2, **kw)
    assert _same(remote, streamtok.loader(root / "ds", **kw)) == len(remote)


def _rest(loader, state):
    loader.load_state_dict(json.loads(json.dumps(state)))
    return [batch_hash(x, y) for x, y in loader]


def test_a_state_moves_between_local_and_remote_and_from_two_ranks_to_one(data):
    root, url, opts = data
    kw = dict(seq_len=32, batch_size=4, seed=7, metrics=False)
    local = streamtok.loader(root / "ds", **kw)
    it = iter(local)
    for _ in range(5):
        next(it)
    it.close()
    state = local.state_dict()
    expected = _rest(streamtok.loader(root / "ds", **kw), state)
    assert _rest(streamtok.loader(url + "ds/", storage_options=opts, **kw), state) == expected
    remote = streamtok.loader(url + "ds/", storage_options=opts, **kw)
    it = iter(remote)
    for _ in range(5):
        next(it)
    it.close()
    assert _rest(streamtok.loader(root / "ds", **kw), remote.state_dict()) == expected
    # Two ranks -> one, elastically: the remote loader continues as the local one does.
    two = streamtok.loader(url + "ds/", storage_options=opts, rank=0, world_size=2, **kw)
    it = iter(two)
    for _ in range(3):
        next(it)
    it.close()
    state2 = two.state_dict()
    assert _rest(streamtok.loader(url + "ds/", storage_options=opts, world_size=1, rank=0, **kw), state2) == \
        _rest(streamtok.loader(root / "ds", world_size=1, rank=0, **kw), state2)


SCRIPT = """
import json, sys
import streamtok
from _util import batch_hash
url, state = sys.argv[1], json.loads(sys.argv[2])
loader = streamtok.loader(url, seq_len=32, batch_size=4, seed=7, metrics=False, mode="random", epochs=1)
loader.load_state_dict(state)
print(json.dumps([batch_hash(x, y) for x, y in loader]))
"""


@pytest.mark.slow
def test_resumed_in_a_new_process_from_the_environment(data, s3):  # noqa: F811
    root, url, _ = data
    kw = dict(seq_len=32, batch_size=4, seed=7, metrics=False, mode="random", epochs=1)
    local = streamtok.loader(root / "ds", **kw)
    it = iter(local)
    for _ in range(4):
        next(it)
    it.close()
    state = local.state_dict()
    expected = _rest(streamtok.loader(root / "ds", **kw), state)
    env = {**os.environ, **s3.env(), "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, url + "ds/", json.dumps(state)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.parametrize("documents", ["stream", "bos"])
def test_megatron_pairs_in_a_bucket(s3, tmp_path, monkeypatch, documents):  # noqa: F811
    from _util import docs_of, write_megatron

    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    (tmp_path / "mg").mkdir()
    write_megatron(str(tmp_path / "mg" / "part_0"), docs_of(rng, 40))
    write_megatron(str(tmp_path / "mg" / "part_1"), docs_of(rng, 30), sequences_per_doc=2)
    bucket = s3.create_bucket()
    s3.upload_dir(tmp_path / "mg", bucket, "mg/")
    kw = dict(seq_len=16, batch_size=2, split="all", seed=1, documents=documents, metrics=False)
    opts = s3.storage_options()
    remote = streamtok.loader(f"s3://{bucket}/mg/", storage_options=opts, **kw)
    assert [i.kind for i in remote.collator.reader.infos] == ["megatron", "megatron"]
    _same(remote, streamtok.loader(tmp_path / "mg", **kw))
    # An explicit URL finds its .idx too (a HEAD, no listing).
    one = streamtok.MemmapReader(f"s3://{bucket}/mg/part_1.bin", storage_options=opts)
    assert one.infos[0].kind == "megatron" and one.n_tokens == streamtok.MemmapReader(tmp_path / "mg" / "part_1.bin").n_tokens
