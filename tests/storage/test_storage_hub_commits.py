"""hf:// sources on a Hub whose branch moves to a commit with other bytes while a loader reads.

The local Hub of ``tests/http_server.py`` holds two commits of one repo, A and B, with the same
shard paths and different bytes; ``main`` names A, then is moved to B (a push) mid-run. A loader
is pinned to the commit ``main`` named when it was built (``streamtok.storage.hub.pin``), so it
reads A to the end, and its saved state names A. Without the pin, the moved branch would
serve B's bytes to the running loader: a non-LFS file's reads would fail its version check, and
an LFS file's (not checked: its bytes come from a CDN) would silently mix A and B.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from http_server import HUB_COMMIT, http_root, hub_branch, hub_repo  # noqa: F401

import streamtok
from streamtok._formats import write_shard
from streamtok.errors import ObjectChangedError, StateMismatchError
from streamtok.storage import hub

A, B = "a1" * 20, "b2" * 20
KW = dict(seq_len=16, batch_size=4, split="all", seed=5, metrics=False, lookahead=0)  # lookahead 0: each batch read when asked


@pytest.fixture(autouse=True)
def _hub_env(http_root, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_ENDPOINT", http_root.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hfcache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("STREAMTOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "_COMMITS", {})  # no pin from another test's server on a reused port


def _commit(http_root, tmp_path, commit, folder, sizes, seed):  # noqa: F811
    """Shards of ``sizes`` tokens as commit ``commit`` of repo o/n, in ``folder/``; also written locally."""
    rng = np.random.default_rng(seed)
    local = tmp_path / commit / folder
    for k, n in enumerate(sizes):
        write_shard(local / f"s_train_{k}.bin", rng.integers(0, 50000, n, dtype=np.uint16))
    hub_repo(http_root.root, "o/n", {f"{folder}/{p.name}": p.read_bytes() for p in local.iterdir()}, commit=commit)
    return local


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(got, want):
    assert len(got) == len(want) > 0
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(got, want))


def _differ(got, want):
    assert len(got) != len(want) or not all(torch.equal(a[0], b[0]) for a, b in zip(got, want))


def test_the_local_hub_answers_each_commit_and_moves_a_branch(http_root, tmp_path):  # noqa: F811
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RevisionNotFoundError

    a = _commit(http_root, tmp_path, A, "d", [3000], seed=1)
    b = _commit(http_root, tmp_path, B, "d", [3000], seed=2)
    api = HfApi(endpoint=http_root.url)
    assert api.repo_info("o/n", repo_type="dataset").sha == HUB_COMMIT  # no branch moved: the default commit
    hub_branch(http_root.root, "o/n", A)
    assert api.repo_info("o/n", repo_type="dataset").sha == A
    assert api.repo_info("o/n", repo_type="dataset", revision=B).sha == B
    assert [f.path for f in api.list_repo_tree("o/n", "d", repo_type="dataset", revision=B)] == ["d/s_train_0.bin"]
    got = hf_hub_download("o/n", "d/s_train_0.bin", repo_type="dataset", cache_dir=tmp_path / "dl", endpoint=http_root.url)
    assert Path(got).read_bytes() == (a / "s_train_0.bin").read_bytes()
    hub_branch(http_root.root, "o/n", B)
    got = hf_hub_download("o/n", "d/s_train_0.bin", repo_type="dataset", cache_dir=tmp_path / "dl", endpoint=http_root.url)
    assert Path(got).read_bytes() == (b / "s_train_0.bin").read_bytes()
    with pytest.raises(RevisionNotFoundError):
        api.repo_info("o/n", repo_type="dataset", revision="c3" * 20)


@pytest.mark.parametrize("folder,same_size", [("d", True), ("lfs", True), ("d", False), ("lfs", False)])
def test_a_running_loader_reads_the_commit_it_was_built_at_to_the_end(http_root, tmp_path, monkeypatch, folder, same_size):  # noqa: F811
    # lfs/: files in LFS, whose reads carry no version to check: only the pin keeps B's bytes out.
    a = _commit(http_root, tmp_path, A, folder, [700, 500], seed=1)
    b = _commit(http_root, tmp_path, B, folder, [700, 500] if same_size else [700, 650], seed=2)
    hub_branch(http_root.root, "o/n", A)
    source = f"hf://datasets/o/n/{folder}/" if same_size else f"hf://datasets/o/n/{folder}/s_train_*.bin"
    want_a, want_b = _batches(streamtok.loader(a, **KW)), _batches(streamtok.loader(b, **KW))
    _differ(want_a, want_b)

    it = iter(streamtok.loader(source, **KW))
    got = [next(it) for _ in range(3)]
    hub_branch(http_root.root, "o/n", B)  # a push while the loader runs
    moved = len(http_root.log)
    got += list(it)
    _same(got, want_a)  # A's batches to the end: no error, none of B's bytes
    reads = [p for _, p, r in http_root.log[moved:] if r]
    assert reads and all(f"/resolve/{A}/{folder}/" in p for p in reads)  # read after the move, at A

    assert all(f"@{A}/" in p for p in streamtok.ShardLister(source).paths)  # built within COMMIT_TTL_S: still A
    monkeypatch.setattr(hub, "COMMIT_TTL_S", 0.0)
    later = streamtok.loader(source, **KW)
    assert all(f"@{B}/" in p for p in later.collator.reader.paths)
    _same(_batches(later), want_b)  # a loader built after the move reads B
    _same(_batches(streamtok.loader(f"hf://datasets/o/n@{A}/{folder}/s_train_*.bin", **KW)), want_a)


def test_a_state_saved_at_a_commit_resumes_on_that_commit_after_the_branch_moved(http_root, tmp_path, monkeypatch):  # noqa: F811
    # Before: the state's origin kept "hf://datasets/o/n/d/", which names main, so the run
    # rebuilt from it after the push was at B (refused by the fingerprint at best).
    a = _commit(http_root, tmp_path, A, "d", [700, 500], seed=1)
    _commit(http_root, tmp_path, B, "d", [700, 500], seed=2)
    hub_branch(http_root.root, "o/n", A)
    want = _batches(streamtok.loader(a, **KW))
    loader = streamtok.loader("hf://datasets/o/n/d/", **KW)
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = json.loads(json.dumps(loader.state_dict()))  # as a checkpoint file holds it
    it.close()
    assert state["origin"]["source"] == f"hf://datasets/o/n@{A}/d/"  # the state names the commit

    hub_branch(http_root.root, "o/n", B)
    monkeypatch.setattr(hub, "COMMIT_TTL_S", 0.0)  # a new process: main is asked again, and names B
    resumed = streamtok.loader(state["origin"]["source"], **KW)
    resumed.load_state_dict(state)
    _same(_batches(resumed), want[4:])  # exactly the uninterrupted run over A from there
    from streamtok.locate_cli import rebuild  # what `streamtok locate` builds from a checkpoint

    _same(_batches(rebuild(state, rank=0, where="ckpt.json")), want[4:])
    at_main = streamtok.loader("hf://datasets/o/n/d/", **KW)  # the branch, now at B: other data, refused by name
    with pytest.raises(StateMismatchError):
        at_main.load_state_dict(state)


def test_other_bytes_under_a_pinned_commit_are_a_named_error(http_root, tmp_path):  # noqa: F811
    # A commit is immutable on the Hub; a server that serves other bytes for it (here: the
    # files of commit A rewritten in place) is caught by the non-LFS file's version (its blob id,
    # the ETag of each ranged read), never read as data.
    a = _commit(http_root, tmp_path, A, "d", [1200], seed=1)
    hub_branch(http_root.root, "o/n", A)
    it = iter(streamtok.loader("hf://datasets/o/n/d/", **KW))
    next(it)
    rng = np.random.default_rng(9)
    write_shard(a / "s_train_0.bin", rng.integers(0, 50000, 1200, dtype=np.uint16))  # same size, other bytes
    hub_repo(http_root.root, "o/n", {"d/s_train_0.bin": (a / "s_train_0.bin").read_bytes()}, commit=A)
    with pytest.raises(ObjectChangedError, match=f"@{A}/d/s_train_0.bin"):
        for _ in it:
            pass
