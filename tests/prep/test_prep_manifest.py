"""The tokenize manifest read back: every crafted or corrupt field is refused, naming the key."""

from __future__ import annotations

import copy
import json

import pytest
from prep_helpers import make_docs, output_bytes, write_txt

from streamtok.errors import StateMismatchError
from streamtok.prep.tokenize import TokenizeConfig, tokenize_files


def _tok(path, out):
    cfg = TokenizeConfig(shard_tokens=500)
    return tokenize_files([str(path)], str(out), config=cfg, workers=1, progress=False)


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    # A valid unfinished manifest: the complete run's settings, no shards, resume at the start.
    root = tmp_path_factory.mktemp("m")
    path = write_txt(root / "in.txt", make_docs(60, seed=2))
    final = _tok(path, root / "clean")
    manifest = {k: v for k, v in final.items() if k not in ("n_tokens", "n_docs", "n_chars", "n_bytes")}
    manifest.update(complete=False, shards=[], splits={})
    manifest["resume"] = {
        "source": 0, "start": 0, "line": 1, "skip": 0,
        "totals": {"n_docs": 0, "n_chars": 0, "n_bytes": 0}, "sink": None, "stdin_sha256": None,
    }
    return path, root, manifest


def _sink(**kw):
    return {"split": "train", "next": {"val": 0, "train": 0}, "position": 0, **kw}


def _set(m, key, value):
    *parents, last = key.split(".")
    for p in parents:
        m = m[int(p)] if isinstance(m, list) else m[p]
    m[last] = value


GOOD_SHARD = {
    "name": "data_train_000000.bin", "split": "train", "n_tokens": 5, "n_docs": 1, "sha256": "0" * 64,
    "docidx": "data_train_000000.bin.docidx", "docidx_sha256": "1" * 64,
}
# (key to set, value, what the error names)
CRAFTED = [
    ("resume.sink", _sink(split="x/../../../PWNED"), "resume.sink.split"),
    ("resume.sink", _sink(split="../train"), "resume.sink.split"),
    ("resume.sink", _sink(next={"val": 0, "train": -1}), "resume.sink.next.train"),
    ("resume.sink", _sink(next={"val": 0, "train": "0"}), "resume.sink.next.train"),
    ("resume.sink", _sink(next={"val": 0, "train": 10**6}), "resume.sink.next.train"),
    ("resume.sink", _sink(next={"val": 0, "train": 0, "../x": 1}), "resume.sink.next"),
    ("resume.sink", _sink(position=-3), "resume.sink.position"),
    ("resume.sink", {"split": "train"}, "resume.sink"),
    ("resume.sink", [], "resume.sink"),
    ("resume.source", 1, "resume.source"),
    ("resume.source", -1, "resume.source"),
    ("resume.start", -5, "resume.start"),
    ("resume.start", 1.5, "resume.start"),
    ("resume.skip", True, "resume.skip"),
    ("resume.line", None, "resume.line"),
    ("resume.totals", {"n_docs": 0}, "resume.totals"),
    ("resume.totals.n_chars", "many", "resume.totals.n_chars"),
    ("resume.stdin_sha256", "../x", "resume.stdin_sha256"),
    ("resume", [], "resume"),
    ("shards", [{**GOOD_SHARD, "name": "../../PWNED.bin"}], "shards[0].name"),
    ("shards", [{**GOOD_SHARD, "name": "data_train_000000.bin/../../x.bin"}], "shards[0].name"),
    ("shards", [{**GOOD_SHARD, "name": "/tmp/data_train_000000.bin"}], "shards[0].name"),
    ("shards", [{**GOOD_SHARD, "name": "data_train_000000.npy"}], "shards[0].name"),
    ("shards", [{**GOOD_SHARD, "split": "val"}], "shards[0].split"),
    ("shards", [{**GOOD_SHARD, "n_tokens": 0}], "shards[0].n_tokens"),
    ("shards", [GOOD_SHARD, "data_train_000001.bin"], "shards[1].name"),
    ("shards", [{**GOOD_SHARD, "docidx": "../../PWNED.docidx"}], "shards[0].docidx"),
    ("shards", [{**GOOD_SHARD, "docidx": "data_train_000001.bin.docidx"}], "shards[0].docidx"),
    ("shards", [{k: v for k, v in GOOD_SHARD.items() if k != "docidx"}], "shards[0].docidx"),
    ("shards", [{k: v for k, v in GOOD_SHARD.items() if k != "docidx_sha256"}], "shards[0].docidx_sha256"),
    ("shards", [{**GOOD_SHARD, "docidx_sha256": "../x"}], "shards[0].docidx_sha256"),
    ("shards", [{**GOOD_SHARD, "sha256": None}], "shards[0].sha256"),
    ("shards", {"a": 1}, "shards"),
]


@pytest.mark.parametrize("key,value,names", CRAFTED)
def test_crafted_manifest_is_refused_before_anything_is_written(unfinished, tmp_path, key, value, names):
    path, _, manifest = unfinished
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    bad = copy.deepcopy(manifest)
    _set(bad, key, value)
    (out / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(StateMismatchError, match=rf"{names.replace('[', '.').replace(']', '.')} = "):
        _tok(path, out)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["deep/out/.streamtok-tokenize.lock", "deep/out/manifest.json"]


def test_the_untouched_manifest_resumes_to_the_clean_output(unfinished, tmp_path):
    path, root, manifest = unfinished
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    _tok(path, tmp_path / "out")
    assert output_bytes(tmp_path / "out") == output_bytes(root / "clean")


def test_a_manifest_from_before_the_document_indexes_is_still_complete(unfinished, tmp_path):
    # Written by a streamtok whose tokenize wrote no .docidx: a rerun finds it done, not corrupt.
    path, root, _ = unfinished
    old = json.loads((root / "clean" / "manifest.json").read_text())
    for shard in old["shards"]:
        del shard["docidx"], shard["docidx_sha256"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(old))
    assert _tok(path, tmp_path / "out") == old
