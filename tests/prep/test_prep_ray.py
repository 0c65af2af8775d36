"""tokenize --engine ray on a local 2-CPU cluster: the one-process bytes for any unit count, a killed
task retried, and a killed driver rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from prep_helpers import cli_command, make_docs, output_bytes, write_txt

from streamtok.prep.sources import ReadOptions
from streamtok.prep.tokenize import KILL_ENV, TokenizeConfig, tokenize_files
from streamtok.prep.units import KILL_UNIT_ENV

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'streamtok[ray]')")

KILLED_UNIT = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Workers inherit this environment: the first task to encode unit 3 kills itself once.
    marker = tmp_path_factory.mktemp("ray") / "killed"
    old = os.environ.get(KILL_UNIT_ENV)
    os.environ[KILL_UNIT_ENV] = f"{KILLED_UNIT}:{marker}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address, marker
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop(KILL_UNIT_ENV, None)
        else:
            os.environ[KILL_UNIT_ENV] = old


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("c")
    inputs = [write_txt(root / f"in{k}.txt", make_docs(200, seed=40 + k)) for k in range(2)]
    return root, inputs


def _tok(inputs, out, **kw):
    cfg = TokenizeConfig(shard_tokens=900, val_tokens=1000, read=ReadOptions(block_bytes=4096))
    return tokenize_files([str(p) for p in inputs], str(out), config=cfg, progress=False, **kw)


def test_ray_output_is_the_one_process_output(cluster, corpus, tmp_path):
    _, marker = cluster
    root, inputs = corpus
    _tok(inputs, tmp_path / "one", workers=1)
    marker.unlink(missing_ok=True)
    for unit_bytes in (600, 5000):  # 40 and 6 tasks
        _tok(inputs, tmp_path / f"ray{unit_bytes}", engine="ray", unit_bytes=unit_bytes)
        assert output_bytes(tmp_path / f"ray{unit_bytes}") == output_bytes(tmp_path / "one")
    assert marker.exists()  # a worker was SIGKILLed while encoding unit 3, and Ray retried it


def test_bad_input_found_by_a_task_is_its_own_error(cluster, tmp_path):
    from streamtok.errors import InputFormatError

    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": 1}\n')
    with pytest.raises(InputFormatError, match=r"bad.jsonl:\(line 2 from byte 0\): no string field 'text'"):
        _tok([tmp_path / "bad.jsonl"], tmp_path / "out", engine="ray")


@pytest.mark.slow
def test_rerun_after_the_driver_was_killed(cluster, corpus, tmp_path):
    address, _ = cluster
    root, inputs = corpus
    _tok(inputs, tmp_path / "one", workers=1)
    args = [*map(str, inputs), "--out", str(tmp_path / "out"), "--shard-tokens", "900", "--val-tokens", "1000",
            "--engine", "ray", "--address", address, "--unit-size", "3000", "--no-progress"]
    killed = subprocess.run(cli_command("tokenize", *args), env={**os.environ, KILL_ENV: "1"}, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is False
    again = subprocess.run(cli_command("tokenize", *args), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "one")


@pytest.mark.parametrize(
    "address, says",
    [("nonsense", "write HOST:PORT"), ("127.0.0.1:1", "no Ray head answers there"), (None, None), ("auto", None), ("ray://h:10001", None)],
)
def test_an_unreachable_address_fails_in_seconds(address, says):
    from streamtok.errors import ConfigError
    from streamtok.prep.ray_engine import _check_reachable

    if says is None:
        _check_reachable(address)  # left to ray.init
    else:
        with pytest.raises(ConfigError, match=says):
            _check_reachable(address)


def test_relative_input_paths_reach_the_tasks(cluster, corpus, tmp_path, monkeypatch):
    """``tokenize corpus/*.jsonl --engine ray`` from the corpus's parent: Ray workers run elsewhere."""
    root, inputs = corpus
    _tok(inputs, tmp_path / "one", workers=1)
    monkeypatch.chdir(root)
    _tok([p.name for p in inputs], tmp_path / "rel", engine="ray")
    assert output_bytes(tmp_path / "rel") == output_bytes(tmp_path / "one")


def test_a_file_gone_in_a_task_is_its_own_one_line_error(cluster, tmp_path):
    """A task that cannot open its input raises the task's FileNotFoundError, not Ray's wrapper."""
    from streamtok.prep._encode import EncodeJob
    from streamtok.prep.ray_engine import RayEncoder
    from streamtok.prep.units import Unit

    gone = str(tmp_path / "gone.txt")
    with RayEncoder(EncodeJob("gpt2", "uint16", (gone,), ReadOptions())) as encoder:
        with pytest.raises(OSError) as err:
            list(encoder.map([Unit(0, 0, 0, 10)]))
    assert type(err.value) is FileNotFoundError and err.value.filename == gone
