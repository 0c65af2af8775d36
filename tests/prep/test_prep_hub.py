"""streamtok download: SPEC parsing, offline use of a real-layout Hub cache, errors, locks, ranks."""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prep_helpers import COMMIT, cli_command, make_hub_cache, run_cli

from streamtok import ShardLister
from streamtok._formats import write_shard
from streamtok.errors import ConfigError, HubError, ShardFormatError
from streamtok.prep import hub

REPO = hub.DEFAULT_REPO


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    names = ["edu_fineweb_val_000000.bin"] + [f"edu_fineweb_train_{i:06d}.bin" for i in (1, 2, 3)]
    cache = make_hub_cache(tmp_path / "hub", REPO, names)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.mark.parametrize(
    "spec, want",
    [
        ("1:3", [1, 2, 3]),
        (":3", [1, 2, 3]),
        ("7", [7]),
        ("1,5,7:9", [1, 5, 7, 8, 9]),
        (" 2 , x_train_000004.bin ", [2, "x_train_000004.bin"]),
        ([1, "3:4"], [1, 3, 4]),
        (5, [5]),
        (None, []),
    ],
)
def test_parse_spec(spec, want):
    assert hub.parse_spec(spec) == want


@pytest.mark.parametrize("bad", ["3:1", "a:b", "1-3"])
def test_parse_spec_refuses(bad):
    with pytest.raises(ConfigError, match="shard"):
        hub.parse_spec(bad)


def test_shard_names_follow_the_repo():
    assert hub.shard_names(REPO, "1:2", val=True) == [
        "edu_fineweb_val_000000.bin", "edu_fineweb_train_000001.bin", "edu_fineweb_train_000002.bin",
    ]
    assert hub.shard_names("kjj0/fineweb10B-gpt2", "9") == ["fineweb_train_000009.bin"]
    with pytest.raises(ConfigError, match="--pattern"):
        hub.shard_names("someone/else", "1")
    assert hub.shard_names("someone/else", "1", pattern="s_{split}_{index:03d}.npy") == ["s_train_001.npy"]
    with pytest.raises(ConfigError, match="no shards asked for"):
        hub.shard_names(REPO, None)


def test_download_offline_from_cache(offline_cache):
    paths = hub.download_shards(REPO, "1:2", val=True, cache_dir=offline_cache)
    assert [os.path.basename(p) for p in paths] == [
        "edu_fineweb_val_000000.bin", "edu_fineweb_train_000001.bin", "edu_fineweb_train_000002.bin",
    ]
    assert all(COMMIT in p and os.path.isfile(p) for p in paths)
    lister = ShardLister(paths)
    assert [os.path.basename(p) for p in lister.split("val")] == ["edu_fineweb_val_000000.bin"]


def test_offline_missing_shard_is_a_clear_error(offline_cache):
    with pytest.raises(HubError, match=r"edu_fineweb_train_000007.bin is not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        hub.download_shards(REPO, "3,7", cache_dir=offline_cache)


def test_from_hub_resolves_lazily(offline_cache, monkeypatch):
    calls = []
    real = hub.download_shards
    monkeypatch.setattr(hub, "download_shards", lambda *a, **k: calls.append(a) or real(*a, **k))
    lister = ShardLister.from_hub(REPO, shards="1:3", val=True, cache_dir=offline_cache)
    assert calls == []
    assert [os.path.basename(p) for p in lister.split("train")] == [f"edu_fineweb_train_{i:06d}.bin" for i in (1, 2, 3)]
    assert len(calls) == 1


def test_cli_download_in_a_fresh_offline_process(tmp_path):
    cache = make_hub_cache(tmp_path / "hub", REPO, ["edu_fineweb_train_000001.bin"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    ok = subprocess.run(cli_command("download", "--shards", "1"), env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith(f"{COMMIT}/edu_fineweb_train_000001.bin")
    bad = subprocess.run(cli_command("download", "--shards", "1:2"), env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "streamtok download: error: karpathy/fineweb-edu-100B-gpt2-token-shards: edu_fineweb_train_000002.bin" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_file_lock_lets_one_process_download(tmp_path, monkeypatch, capsys):
    active, peak, downloads = [0], [0], []
    guard = threading.Lock()

    def fake_download(repo_id, name, *, local_dir, **kw):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        path = os.path.join(local_dir, name)
        if not os.path.exists(path):
            threading.Event().wait(0.02)  # widen the window a missing lock would let others in
            downloads.append(name)
            with open(path, "wb") as f:
                f.write(b"xy")  # one raw uint16 token
        with guard:
            active[0] -= 1
        return path

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    with ThreadPoolExecutor(4) as pool:
        results = [f.result() for f in [pool.submit(hub.download_shards, REPO, "4", local_dir=tmp_path) for _ in range(4)]]
    assert results == [[os.path.join(tmp_path, "edu_fineweb_train_000004.bin")]] * 4
    assert downloads == ["edu_fineweb_train_000004.bin"] and peak[0] == 1


def test_cli_needs_something_to_download(capsys):
    assert run_cli(["download"]) == 2
    assert "no shards asked for" in capsys.readouterr().err


def _rank_download(rank, world, init_file, cache, specs, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = []
        for spec in specs:
            try:
                results.append(hub.download_shards(REPO, spec, cache_dir=cache))
            except HubError as exc:
                results.append(f"HubError: {exc}")
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(repr(results))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_share_one_download_and_one_error(tmp_path, monkeypatch):
    import ast

    import torch.multiprocessing as mp

    cache = make_hub_cache(tmp_path / "hub", REPO, [f"edu_fineweb_train_{i:06d}.bin" for i in (1, 2)])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mp.spawn(_rank_download, args=(2, str(tmp_path / "init"), str(cache), ["1:2", "2:3"], str(tmp_path)), nprocs=2, join=True)
    (ok0, bad0), (ok1, bad1) = [ast.literal_eval((tmp_path / f"rank{r}.txt").read_text()) for r in range(2)]
    assert ok0 == ok1 and os.path.basename(ok0[1]) == "edu_fineweb_train_000002.bin"
    # rank 0 failed; rank 1 passed the barrier and failed too, instead of hanging
    assert all(b.startswith("HubError") and "edu_fineweb_train_000003.bin" in b for b in (bad0, bad1))


def test_local_dir_offline_reuses_and_checks_files(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    name = "edu_fineweb_train_000002.bin"
    with pytest.raises(HubError, match=f"{name} is not in {tmp_path}"):
        hub.download_shards(REPO, "2", local_dir=tmp_path)
    write_shard(tmp_path / name, np.arange(50, dtype=np.uint16))
    assert hub.download_shards(REPO, "2", local_dir=tmp_path) == [str(tmp_path / name)]
    (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:-10])
    with pytest.raises(ShardFormatError, match="truncated"):
        hub.download_shards(REPO, "2", local_dir=tmp_path)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["not a repo", "--shards", "1", "--pattern", "x_{split}_{index}.bin"], "'not a repo' is not a Hugging Face repo id"),
        (["--shards", "../../evil.bin"], "shard name '../../evil.bin' is not a plain file path"),
        (["--shards", "a/../../evil.bin"], "is not a plain file path"),
        (["--shards", "/etc/passwd.bin"], "is not a plain file path"),
        (["--shards", "sub/./x.bin"], "is not a plain file path"),
        (["owner/../x", "--shards", "a.bin"], "is not a Hugging Face repo id"),
    ],
)
def test_cli_bad_repo_or_name_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "work"
    (work / "dl").mkdir(parents=True)
    monkeypatch.chdir(work / "dl")
    assert run_cli(["download", *argv, "--dir", str(work / "dl"), "--cache-dir", str(work / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no lock file anywhere, in --dir or outside it


def test_cli_download_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "f").write_text("")
    assert run_cli(["download", "--shards", "1", "--dir", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot create the download directory" in err


def test_a_huge_shard_range_is_one_line_and_exit_2(tmp_path):
    """``download --shards 1:99999999999`` used to expand the range first (MemoryError)."""
    import resource

    def cap_memory():  # a regression fails with MemoryError in seconds instead of eating the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    out = subprocess.run(
        cli_command("download", "--shards", "1:99999999999", "--dir", str(tmp_path)),
        capture_output=True, text=True, timeout=120, preexec_fn=cap_memory,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "99,999,999,999 shards" in out.stderr
    with pytest.raises(ConfigError, match="at most 100,000"):
        hub.parse_spec(["1:60000", "60001:100001"])
    assert len(hub.parse_spec("1:100000")) == hub.MAX_SHARDS


def test_unreachable_hub_error_is_whole_words(tmp_path, monkeypatch, capsys):
    """No network and no cache: the message names the cause and is not cut mid-word."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    long = ("An error happened while trying to locate the file on the Hub and we cannot find the requested files in "
            "the local cache. Please check your connection and try again or make sure your Internet connection is on.")

    def unreachable(*args, **kw):
        raise LocalEntryNotFoundError(long) from ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", unreachable)
    assert run_cli(["download", "--shards", "1", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "could not be reached (ConnectionError: [Errno -2] Name or service not known); check the network" in err
    assert hub._clip(long, 120) == long[:120].rsplit(" ", 1)[0] + " ..." and hub._clip(long, 120).endswith("local cache. ...")
    assert hub._clip("short\nsecond line") == "short"
