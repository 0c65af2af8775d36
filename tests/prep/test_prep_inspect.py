"""streamtok inspect: counts, decoding, --check, --json, and bad shards as clear errors."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from prep_helpers import run_cli

from streamtok._formats import write_shard
from streamtok.prep import inspect as inspect_mod
from streamtok.prep.encoding import load_encoding


@pytest.fixture
def shards(tmp_path):
    enc = load_encoding("gpt2")
    good = np.array([50256, *enc.encode_ordinary("Hello world"), 50256, *enc.encode_ordinary(" once again, and more")], dtype=np.uint16)
    write_shard(tmp_path / "good_train_000000.bin", good)
    bad = good.copy()
    bad[4] = 60000
    bad[5] = 50257
    write_shard(tmp_path / "bad.npy", bad)
    return tmp_path, good


def records(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_report(shards, capsys):
    d, good = shards
    assert run_cli(["inspect", str(d / "good_train_000000.bin"), "--json", "--sha256", "--head", "3"]) == 0
    (r,) = records(capsys)
    assert r["format"] == "llmc" and r["dtype"] == "uint16" and r["header"]["magic"] == 20240520
    assert (r["n_tokens"], r["n_docs"], r["max_token"]) == (len(good), 2, 50256)
    assert r["sha256"] == hashlib.sha256((d / "good_train_000000.bin").read_bytes()).hexdigest()
    assert r["head_tokens"] == good[:3].tolist() and r["head_text"] == "<|endoftext|>Hello world"


def test_check_reports_first_bad_offset(shards, capsys):
    d, _ = shards
    assert run_cli(["inspect", str(d / "bad.npy"), "--json"]) == 0  # reported, not failed, without --check
    (r,) = records(capsys)
    assert (r["first_bad_offset"], r["first_bad_token"], r["n_bad"], r["max_token"]) == (4, 60000, 2, 60000)
    assert run_cli(["inspect", str(d), "--check"]) == 1
    out = capsys.readouterr().out
    assert "2 ids >= 50257; first at token offset 4 (id 60000)" in out and "good_train_000000.bin" in out


def test_scan_is_sliced(shards, monkeypatch):
    d, good = shards
    monkeypatch.setattr(inspect_mod, "SLICE_TOKENS", 2)
    r = inspect_mod.scan_shard(str(d / "bad.npy"), vocab_size=50257, eot=50256)
    assert (r.first_bad_offset, r.n_bad, r.n_docs) == (4, 2, 2)


def test_bad_shards_are_clear_errors(tmp_path, shards, capsys):
    d, good = shards
    data = (d / "good_train_000000.bin").read_bytes()
    (tmp_path / "trunc.bin").write_bytes(data[:-2])
    (tmp_path / "empty.bin").write_bytes(b"")
    code = run_cli(["inspect", str(tmp_path / "trunc.bin"), str(tmp_path / "empty.bin"), str(d / "good_train_000000.bin")])
    err = capsys.readouterr()
    assert code == 2
    assert "trunc.bin: error: " in err.err and "the shard is truncated" in err.err
    assert "empty.bin: error: " in err.err and "Traceback" not in err.err
    assert "good_train_000000.bin" in err.out  # the good shard is still reported


# (dtype, tokens, vocab, n_bad, n_negative, first_bad_offset): both bounds, every signed width.
BOUNDS = [
    ("int8", [1, -1, 2], 50257, 1, 1, 1),
    ("int16", [-32768, 5, 32767], 50257, 1, 1, 0),
    ("int32", [50256, 10, -5, 20, 70000], 50257, 2, 1, 2),
    ("int64", [0, 2**40, -(2**40)], 50257, 2, 1, 1),
    ("int32", [0, 99, 100, -1], 100, 2, 1, 2),
    ("uint16", [0, 65535, 50257, 50256], 50257, 2, 0, 1),
    ("uint32", [2**32 - 1, 3], 50257, 1, 0, 0),
    ("int32", [0, 1, 2], 50257, 0, 0, None),
]


@pytest.mark.parametrize("dtype,tokens,vocab,n_bad,n_neg,first", BOUNDS)
def test_check_counts_ids_outside_both_bounds(tmp_path, capsys, dtype, tokens, vocab, n_bad, n_neg, first):
    path = tmp_path / "s.npy"
    np.save(path, np.array(tokens, dtype=dtype))
    r = inspect_mod.scan_shard(str(path), vocab_size=vocab, eot=None)
    assert (r.n_bad, r.n_negative, r.first_bad_offset) == (n_bad, n_neg, first)
    assert (r.min_token, r.max_token) == (min(tokens), max(tokens))
    code = run_cli(["inspect", str(path), "--check", "--vocab-size", str(vocab)])
    out = capsys.readouterr()
    assert code == (1 if n_bad else 0) and "Traceback" not in out.err and "error" not in out.err
    if n_neg:
        assert f"({n_neg} negative, {n_bad - n_neg} >= {vocab})" in out.out


def test_llama3_shard_uses_its_own_vocabulary(tmp_path, capsys):
    ids = np.array([128000, 9906, 1917, 128000, 50300, 128255], dtype=np.uint32)
    write_shard(tmp_path / "llama_train_000000.bin", ids)  # uint32 -> magic 20240801, version 7
    assert run_cli(["inspect", str(tmp_path), "--check", "--json"]) == 0
    (r,) = records(capsys)
    assert r["header"]["magic"] == 20240801 and r["vocab_size"] == 128256
    assert (r["n_bad"], r["n_docs"], r["head_text"]) == (0, 2, None)  # not decoded as GPT-2 text
    ids[2] = 128256
    write_shard(tmp_path / "llama_train_000000.bin", ids)
    assert run_cli(["inspect", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "1 ids >= 128256; first at token offset 2 (id 128256)" in out and "decoded" not in out
    assert run_cli(["inspect", str(tmp_path), "--check", "--vocab-size", "200000"]) == 0  # an explicit size wins


@pytest.mark.parametrize("kind", ["directory", "loop", "dangling"])
def test_non_files_named_bin_are_one_line_errors(tmp_path, capsys, kind):
    path = tmp_path / "odd.bin"
    if kind == "directory":
        path.mkdir()
    elif kind == "loop":
        os.symlink(path, path)
    else:
        os.symlink(tmp_path / "gone", path)
    for arg in (path, tmp_path):  # named, and found by listing its directory
        assert run_cli(["inspect", str(arg)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "odd.bin" in err and "not a shard file" in err and "Traceback" not in err


LENGTHS = [5, 10, 20, 40, 100]  # median 20, p90 40 + 0.6 * 60 = 76, max 100


def _write_documents(tmp_path, kind):
    # The five documents of LENGTHS in one shard of ``kind``; returns the shard's path.
    if kind == "megatron":
        from _util import write_megatron

        write_megatron(tmp_path / "mega", [np.ones(n, dtype=np.uint16) for n in LENGTHS])
        return tmp_path / "mega.bin"
    boundary, dtype, name = {
        "gpt2": (50256, np.uint16, "gpt2_train_000000.bin"),
        "llama3": (128000, np.uint32, "llama_train_000000.bin"),
        "npy": (50256, np.uint16, "tokens.npy"),
    }[kind]
    tokens = np.concatenate([np.r_[boundary, np.ones(n - 1)] for n in LENGTHS]).astype(dtype)
    write_shard(tmp_path / name, tokens)
    return tmp_path / name


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "npy", "megatron"])
def test_documents_and_their_lengths_per_format(tmp_path, capsys, kind):
    shard = _write_documents(tmp_path, kind)
    assert run_cli(["inspect", str(tmp_path), "--json"]) == 0
    (r,) = records(capsys)  # one shard: neither its .docidx nor a Megatron .idx is listed as one
    assert r["path"].endswith(shard.name) and (shard.parent / (shard.name + ".docidx")).exists()
    assert r["documents"] == {"n_documents": 5, "median": 20.0, "p90": pytest.approx(76.0), "max": 100}
    assert r["n_docs"] == 5
    assert run_cli(["inspect", str(tmp_path)]) == 0  # the second time from the cached index
    out = capsys.readouterr().out
    assert "5 documents by the index, length median 20, p90 76, max 100 tokens" in out
    assert out.count(shard.name) == 1


def test_document_lengths_unknown_without_a_boundary(tmp_path, capsys):
    write_shard(tmp_path / "ids.npy", np.array([3, 1, 2, 3], dtype=np.int32))
    assert inspect_mod.document_lengths(str(tmp_path / "ids.npy"), bos_id=None) is None  # int32 .npy: no default
    assert inspect_mod.document_lengths(str(tmp_path / "ids.npy"), bos_id=3) == {"n_documents": 2, "median": 2.0, "p90": pytest.approx(2.8), "max": 3}


def test_megatron_int32_vocabulary_is_unknown_not_gpt2(tmp_path, capsys):
    """A Megatron int32 shard (Llama-3 ids) is not checked against GPT-2: --check says it cannot check."""
    from _util import write_megatron

    rng = np.random.default_rng(0)
    docs = [np.r_[128000, rng.integers(0, 128256, n - 1)] for n in (40, 70, 25)]
    write_megatron(tmp_path / "llama", docs, dtype=np.int32)
    assert run_cli(["inspect", str(tmp_path / "llama.bin"), "--check", "--json"]) == 2
    (r,) = records(capsys)
    assert r["vocab_size"] is None and "Megatron int32" in r["vocab_source"] and "65,500 or more" in r["vocab_source"]
    assert (r["n_bad"], r["n_docs"], r["head_text"], r["error"]) == (0, 3, None, None)  # documents from the .idx
    assert run_cli(["inspect", str(tmp_path / "llama.bin"), "--check"]) == 2
    out = capsys.readouterr().out
    assert "ids not checked against a vocabulary" in out and "--vocab-size" in out
    assert ">= 50257" not in out and "decoded" not in out
    assert run_cli(["inspect", str(tmp_path / "llama.bin")]) == 0  # without --check: a report, not a failure
    capsys.readouterr()
    assert run_cli(["inspect", str(tmp_path / "llama.bin"), "--check", "--vocab-size", "128256"]) == 0
    assert "vocab 128256 from --vocab-size 128256" in capsys.readouterr().out
    assert run_cli(["inspect", str(tmp_path / "llama.bin"), "--check", "--vocab-size", "100000"]) == 1


@pytest.mark.parametrize(
    "kind, dtype, size, source",
    [
        ("llmc", np.uint16, 50257, "llm.c header (magic 20240520: GPT-2)"),
        ("llmc", np.uint32, 128256, "llm.c header (magic 20240801: Llama 3)"),
        ("npy", np.uint16, 50257, "GPT-2 assumed: uint16 without a header"),
        ("npy", np.int32, None, "unknown: int32 ids in a npy shard"),
        ("megatron", np.uint16, None, "unknown: a Megatron uint16 shard says only that its vocabulary is under 65,500"),
    ],
)
def test_vocabulary_comes_from_what_the_data_says(tmp_path, kind, dtype, size, source):
    from streamtok._formats import probe_shard
    from streamtok.prep.vocabulary import shard_vocabulary

    if kind == "megatron":
        from _util import write_megatron

        write_megatron(tmp_path / "m", [np.arange(5, dtype=dtype)], dtype=dtype)
        path = tmp_path / "m.bin"
    else:
        path = tmp_path / ("s.bin" if kind == "llmc" else "s.npy")
        write_shard(path, np.arange(5, dtype=dtype))
    vocab = shard_vocabulary(probe_shard(str(path)))
    assert vocab.size == size and vocab.source.startswith(source)
    assert (vocab.encoding is not None) == (size == 50257)  # decoded only when known to be GPT-2
    assert shard_vocabulary(probe_shard(str(path)), vocab_size=7).size == 7
    assert shard_vocabulary(probe_shard(str(path)), encoding="gpt2").size == 50257
