"""streamtok inspect: counts, decoding, --check, --json, and bad shards as clear errors."""

from __future__ import annotations

import hashlib
import json

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
