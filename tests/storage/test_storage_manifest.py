"""The ``streamtok tokenize`` manifest in a bucket is read as it is beside local shards.

A prefix tokenized with a Hugging Face tokenizer (an llm.c GPT-2 header, whose format token
50256 never occurs) is uploaded to the loopback S3 server with its ``manifest.json``: a loader
with ``documents="mask"`` and no ``bos_id`` must take the boundary from the manifest (one GET,
then cached), check it against the objects, and give the local loader's batches;
``streamtok inspect`` gets the vocabulary from it.
"""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from http_server import HUB_COMMIT, http_root  # noqa: F401
from s3_server import s3, s3_bucket  # noqa: F401

import streamtok
from streamtok import cli
from streamtok.errors import ConfigError
from streamtok.storage.remote import forget_opened

pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'streamtok[hf]')")

WORDS = [f"w{i}" for i in range(300)]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """``(shard dir, manifest)``: a corpus tokenized by ``streamtok tokenize --tokenizer``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    root = tmp_path_factory.mktemp("tok")
    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(399)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 160))) for _ in range(200)]
    (root / "docs.txt").write_text("\n\n".join(docs) + "\n\n")
    out = root / "out"
    assert cli.main(["tokenize", str(root / "docs.txt"), "--tokenizer", str(root / "tokenizer.json"), "--out", str(out),
                     "--shard-tokens", "6000", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["eot_token"] == 400 and len(manifest["shards"]) >= 3
    return out, manifest


def _kw(**extra):
    return dict(seq_len=64, batch_size=4, split="all", documents="mask", seed=5, metrics=False, **extra)


def _manifest_gets(server):
    return [p for m, p, _ in server.proxy.counters.log if m == "GET" and p.endswith("/manifest.json")]


def test_mask_takes_the_boundary_from_the_manifest_in_the_bucket(s3_bucket, made, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    out, manifest = made
    server.upload_dir(out, bucket, "tok/")
    url = f"s3://{bucket}/tok/"
    server.proxy.reset()
    forget_opened()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would mean the token was assumed (50256, from the header)
        remote = streamtok.loader(url, **_kw())
    index = remote.collator.index
    assert index.boundary.token == 400 and "tokenize manifest" in index.boundary.source
    assert f"s3://{bucket}/tok/manifest.json" in index.boundary.source
    assert index.n_documents == manifest["n_docs"]
    assert len(_manifest_gets(server)) == 1  # one GET for every shard of the prefix
    local = streamtok.loader(out, **_kw())
    got, want = list(remote), list(local)
    assert len(got) == len(want) > 0
    for (x1, y1, d1), (x2, y2, d2) in zip(got, want):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(d1.cu_seqlens, d2.cu_seqlens)
    assert np.mean([len(d.cu_seqlens) - 1 for _, _, d in got]) > 4 * 1.5  # rows split at 400, not at 50256
    # A restart: the manifest, the shards' digests and document indexes come from the local cache.
    server.proxy.reset()
    forget_opened()
    again = streamtok.loader(url, **_kw())
    assert again.collator.index.boundary == index.boundary
    assert _manifest_gets(server) == [] and server.proxy.counters.range_gets == 0


def test_a_manifest_that_does_not_match_the_objects_is_refused(s3_bucket, made, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    out, manifest = made
    server.upload_dir(out, bucket, "tok/")
    name = manifest["shards"][1]["name"]
    data = bytearray((out / name).read_bytes())
    data[-2:] = (7).to_bytes(2, "little")  # same size and token count, another sha256
    server.upload(bucket, f"tok/{name}", bytes(data))
    with pytest.raises(ConfigError, match=rf"s3://{bucket}/tok/manifest.json: lists shard {name} but says sha256"):
        streamtok.loader(f"s3://{bucket}/tok/", **_kw())
    assert streamtok.loader(f"s3://{bucket}/tok/", **_kw(bos_id=400)).collator.index.boundary.token == 400  # bos_id wins


def test_a_manifest_that_is_not_a_tokenize_manifest_says_nothing(s3_bucket, made, tmp_path, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    out, manifest = made
    names = [s["name"] for s in manifest["shards"]]
    for name in names:
        server.upload(bucket, f"a/{name}", (out / name).read_bytes())
        server.upload(bucket, f"b/{name}", (out / name).read_bytes())
    server.upload(bucket, "b/manifest.json", json.dumps({"shards": "not a list", "eot_token": 3}).encode())
    server.proxy.reset()
    for prefix in ("a", "b"):  # none listed: no request for it; another tool's: read, and ignored
        with pytest.warns(UserWarning, match="found 0 document starts"):  # as locally: 50256 never occurs here
            index = streamtok.loader(f"s3://{bucket}/{prefix}/", **_kw()).collator.index
        assert index.boundary.token == 50256 and "llm.c header" in index.boundary.source  # the format's, as locally
    assert _manifest_gets(server) == [f"/{bucket}/b/manifest.json"]


def test_inspect_gets_the_vocabulary_from_the_manifest_in_the_bucket(s3_bucket, made, tmp_path, capsys, monkeypatch):
    server, bucket = s3_bucket
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    out, manifest = made
    server.upload_dir(out, bucket, "tok/")
    capsys.readouterr()
    server.proxy.reset()
    assert cli.main(["inspect", f"s3://{bucket}/tok/", "--json", "--check"]) == 0
    remote = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(remote) == len(manifest["shards"]) and len(_manifest_gets(server)) == 1  # read once for all shards
    assert cli.main(["inspect", str(out), "--json", "--check"]) == 0
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["vocab_source"] for r in remote} == {"the tokenize manifest (a Hugging Face tokenizer)"}
    assert {r["vocab_size"] for r in remote} == {manifest["n_vocab"]}
    for r in remote + local:
        r.pop("path")
    assert remote == local


def test_an_hf_repo_with_its_manifest_is_read_as_the_local_directory(http_root, made, tmp_path, monkeypatch):  # noqa: F811
    import shutil

    from streamtok.storage.remote import forget_opened

    monkeypatch.setenv("HF_ENDPOINT", http_root.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    out, manifest = made
    shutil.copytree(out, http_root.root / "hub" / "owner" / "tokd" / "d")
    shutil.copytree(out, http_root.root / "hub" / "owner" / "tokd" / "bare", ignore=shutil.ignore_patterns("manifest.json"))

    def gets():
        return [p for m, p, _ in http_root.log if m == "GET" and p.endswith("manifest.json")]

    forget_opened()
    index = streamtok.loader("hf://datasets/owner/tokd/d/", **_kw()).collator.index
    assert index.boundary.token == 400 and f"hf://datasets/owner/tokd@{HUB_COMMIT}/d/manifest.json" in index.boundary.source
    assert len(gets()) == 1
    http_root.log.clear()
    forget_opened()
    assert streamtok.loader("hf://datasets/owner/tokd/d/", **_kw()).collator.index.boundary == index.boundary
    assert gets() == []  # the listing's version of the manifest, and the copy of it in the cache
    with pytest.warns(UserWarning, match="found 0 document starts"):
        streamtok.loader("hf://datasets/owner/tokd/bare/", **_kw())
    assert gets() == []  # the listing showed no manifest: nothing asked
