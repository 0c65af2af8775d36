"""The boundary token a loader split its rows at is in its state: a resume where the tokenize
manifest now names another token (or ``bos_id`` is given differently) is a named
``BoundaryMismatchError`` naming both tokens, never other rows in silence. States saved before
the token was recorded still load (not checked), and ``streamtok locate`` reads old and new ones."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from _util import roundtrip

import streamtok
from streamtok import BoundaryMismatchError, StateMismatchError, cli
from streamtok._formats import write_shard
from streamtok.documents.sidecar import document_starts

T, B = 16, 4
A, Z = 1000, 1001  # both start documents in the data; the manifest names one of them


def _write(directory, seed):
    directory.mkdir()
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, 900, 6000).astype(np.uint16)
    tokens[rng.choice(6000, 300, replace=False)] = A
    tokens[rng.choice(6000, 200, replace=False)] = Z
    tokens[0] = A
    write_shard(directory / "part_000.bin", tokens)
    return directory


def _manifest(directory, token):
    """A ``streamtok tokenize`` manifest naming ``token`` as the boundary (checked against the shard)."""
    shard = directory / "part_000.bin"
    entry = {
        "name": shard.name, "n_tokens": 6000, "sha256": hashlib.sha256(shard.read_bytes()).hexdigest(),
        "n_docs": len(document_starts(shard, bos_id=token)),
    }
    manifest = {"eot_token": token, "n_vocab": 4096, "dtype": "uint16", "encoding": None, "shards": [entry]}
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def data(tmp_path):
    dirs = {"web": _write(tmp_path / "web", 0), "code": _write(tmp_path / "code", 1)}
    for d in dirs.values():
        _manifest(d, A)
    return dirs


def _single(data, documents, **kw):
    return streamtok.loader(data["web"], seq_len=T, batch_size=B, split="all", documents=documents, metrics=False, **kw)


def _mixture(data, documents, **kw):
    return streamtok.loader(
        dict(data), weights={"web": 0.6, "code": 0.4}, seq_len=T, batch_size=B, split="all", documents=documents,
        metrics=False, **kw,
    )


def _saved(ld, steps=3):
    return _saved_and_next(ld, steps)[0]


def _saved_and_next(ld, steps=3, more=2):
    """The state after ``steps`` batches of a pass and the ``more`` batches' inputs that follow in it."""
    it = iter(ld)
    for _ in range(steps):
        next(it)
    state = roundtrip(ld.state_dict())
    after = [next(it)[0].tolist() for _ in range(more)]
    it.close()
    return state, after


def _next(ld, more=2):
    it = iter(ld)
    out = [next(it)[0].tolist() for _ in range(more)]
    it.close()
    return out


MODES = ["mask", "bos", "pack"]


@pytest.mark.parametrize("documents", MODES)
@pytest.mark.parametrize("build", [_single, _mixture], ids=["single", "mixture"])
def test_a_resume_whose_manifest_now_names_another_token_is_refused_naming_both(data, documents, build):
    ld = build(data, documents)
    assert ld.collator.index.boundary.token == A  # from the manifest (bos_id not given)
    state, after = _saved_and_next(ld)
    config = state["sampler"]["sources"]["web"] if build is _mixture else state["sampler"]["config"]
    assert config["boundary"] == A  # the token itself, not bos_id=None
    resumed = build(data, documents)  # same manifest: resumes exactly
    resumed.load_state_dict(state)
    assert _next(resumed) == after
    _manifest(data["web"], Z)  # the manifest now says another token: other rows
    with pytest.raises(BoundaryMismatchError, match=rf"token {A}.*token {Z} \(bos_id={Z}, from the tokenize manifest .*manifest.json\)"):
        build(data, documents).load_state_dict(state)
    with pytest.raises(StateMismatchError):  # the named error is a StateMismatchError
        build(data, documents).load_state_dict(state)
    # bos_id given as the saved token: the saved run, resumed exactly
    again = build(data, documents, bos_id=A)
    again.load_state_dict(state)
    assert _next(again) == after


@pytest.mark.parametrize("documents", MODES)
def test_bos_id_given_differently_is_refused_and_the_same_token_given_is_not(data, documents):
    state = _saved(_single(data, documents, bos_id=A))
    with pytest.raises(BoundaryMismatchError, match=rf"'boundary'.*token {A}.*token {Z} \(bos_id={Z}\)"):
        _single(data, documents, bos_id=Z).load_state_dict(state)
    _single(data, documents).load_state_dict(state)  # bos_id left out, the manifest says A: the same rows


@pytest.mark.parametrize("documents", MODES)
@pytest.mark.parametrize("build", [_single, _mixture], ids=["single", "mixture"])
def test_a_state_saved_before_the_token_was_recorded_loads_unchecked(data, documents, build):
    ld = build(data, documents)
    state, after = _saved_and_next(ld)
    if build is _mixture:
        for entry in state["sampler"]["sources"].values():
            del entry["boundary"]
    else:
        del state["sampler"]["config"]["boundary"]
    resumed = build(data, documents)
    resumed.load_state_dict(state)
    assert _next(resumed) == after
    _manifest(data["web"], Z)
    build(data, documents).load_state_dict(state)  # nothing recorded: nothing to check (as before)


def test_stream_and_mask_still_read_each_others_states(data):
    """A mask state (with its token) resumes a stream loader over the same windows, and back."""
    state, after = _saved_and_next(_single(data, "mask"))
    plain = _single(data, "stream")
    plain.load_state_dict(state)
    assert _next(plain) == after
    _single(data, "mask").load_state_dict(_saved(_single(data, "stream")))
    mixed = _mixture(data, "mask")
    _mixture(data, "stream").load_state_dict(_saved(mixed))


@pytest.mark.parametrize("documents", ["mask", "pack"])
@pytest.mark.parametrize("build", [_single, _mixture], ids=["single", "mixture"])
def test_streamtok_locate_reads_old_and_new_states(data, documents, build, tmp_path, capsys):
    ld = build(data, documents)
    new = _saved(ld)
    old = roundtrip(new)
    for entry in old["sampler"]["sources"].values() if build is _mixture else [old["sampler"]["config"]]:
        del entry["boundary"]
    want = [(r.source, r.shard, r.offset, r.document) for r in ld.locate(5)]
    for label, state in (("new", new), ("old", old)):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(state))
        assert cli.main(["locate", str(path), "--step", "5", "--json"]) == 0, label
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(p["source"], p["shard"], p["offset"], p["document"]) for p in printed] == want, label
    _manifest(data["web"], Z)  # a new state names its token: locate refuses other rows, naming both
    assert cli.main(["locate", str(tmp_path / "new.json"), "--step", "5"]) == 2
    assert f"token {A}" in capsys.readouterr().err
