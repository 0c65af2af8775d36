"""Issue 10.11: the monitor follows a new run when the shown one ends, waits for one, and
switches by hand with the run picker (``r``)."""

import asyncio
import json
import os
import threading
import time

import numpy as np
import pytest
from streamtok_monitor import cli
from streamtok_monitor.app import MonitorApp, RunPicker
from streamtok_monitor.runs import next_run, wait_for_run
from streamtok_monitor.watcher import Sampler

import streamtok
from streamtok._atomic import write_json_atomic
from streamtok._formats import write_shard
from streamtok.metrics import publish as metrics


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)
    path = tmp_path / "data" / "s_000.bin"
    write_shard(path, np.random.default_rng(5).integers(0, 50257, 20_000, dtype=np.uint16))
    return path


def _end(run_dir):
    """Make a run look ended: its trainer PID gone."""
    m = metrics.read_manifest(run_dir)
    write_json_atomic(os.path.join(run_dir, metrics.MANIFEST), {**m, "pid": 999_999_999})


def _loader(path):
    return streamtok.loader(path, seq_len=64, batch_size=2, split="all")


async def _until(pilot, predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if predicate():
            return True
    return False


def _title(app):
    return str(app.query_one("#title").content)


def test_follows_the_next_run_when_the_shown_one_ends(root):
    first = _loader(root)
    _end(first._metrics.dir)
    watch = Sampler(run_dir=first._metrics.dir)
    second = _loader(root)
    for _ in zip(range(5), second):
        pass

    async def scenario():
        app = MonitorApp(watch, interval_s=0.05, follow=next_run)
        async with app.run_test(size=(100, 30)) as pilot:
            assert await _until(pilot, lambda: app.snapshot and app.snapshot["run"]["dir"] == second._metrics.dir)
            assert "followed" in _title(app) and os.path.basename(first._metrics.dir) in _title(app)
            assert _title(app).index(os.path.basename(second._metrics.dir)) < _title(app).index("followed")  # the run shown first
            assert "RUNNING" in _title(app) or "IDLE" in _title(app)

    asyncio.run(scenario())


def test_without_follow_an_ended_run_stays(root):
    first = _loader(root)
    _end(first._metrics.dir)
    second = _loader(root)  # noqa: F841 (a live run that must not be switched to)

    async def scenario():
        app = MonitorApp(Sampler(run_dir=first._metrics.dir), interval_s=0.05)
        async with app.run_test(size=(100, 30)) as pilot:
            assert await _until(pilot, lambda: app.snapshot and app.snapshot["run"]["status"] == "ended")
            await pilot.pause(0.3)
            assert app.snapshot["run"]["dir"] == first._metrics.dir and "ENDED" in _title(app)

    asyncio.run(scenario())


def test_run_picker_switches_runs(root):
    a, b = _loader(root), _loader(root)

    async def scenario():
        app = MonitorApp(Sampler(run_dir=a._metrics.dir), interval_s=0.05)
        async with app.run_test(size=(100, 30)) as pilot:
            assert await _until(pilot, lambda: app.snapshot is not None)
            await pilot.press("r")
            assert isinstance(app.screen, RunPicker)
            assert [r.dir for r in app.screen.runs] == [b._metrics.dir, a._metrics.dir]  # newest first
            await pilot.press("enter")  # the first, highlighted: b
            assert await _until(pilot, lambda: app.snapshot["run"]["dir"] == b._metrics.dir)
            assert "picked" in _title(app)
            await pilot.press("r")
            await pilot.press("escape")
            assert not isinstance(app.screen, RunPicker)

    asyncio.run(scenario())


def test_wait_returns_when_a_run_starts(root, capsys):
    made = []

    def start_later():
        time.sleep(0.3)
        made.append(_loader(root))

    t = threading.Thread(target=start_later)
    t.start()
    live = wait_for_run(0.05, timeout_s=20)
    t.join()
    assert [r.dir for r in live] == [made[0]._metrics.dir]
    assert wait_for_run(0.01, root=str(root.parent / "empty"), timeout_s=0.05) == []


def test_cli_wait_then_once(root, capsys):
    made = []
    t = threading.Timer(0.3, lambda: made.append(_loader(root)))
    t.start()
    assert cli.main(["--wait", "--once", "--json", "--interval", "0.1"]) == 0
    t.join()
    assert json.loads(capsys.readouterr().out)["run"]["dir"] == made[0]._metrics.dir
