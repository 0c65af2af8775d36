"""streamtok-monitor against a real loader running in another process: the app driven
headless with Pilot, the trainer SIGKILLed under it, and the command line."""

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from streamtok_monitor import cli
from streamtok_monitor.app import HelpScreen, MonitorApp
from streamtok_monitor.watcher import Sampler

from streamtok.metrics import publish as metrics

pytestmark = pytest.mark.slow

TRAINER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import streamtok
    from streamtok._formats import write_shard

    data, limit_s = sys.argv[1], float(sys.argv[2])
    for k in range(2):
        write_shard(os.path.join(data, f"train_{k:03d}.bin"),
                    np.random.default_rng(k).integers(0, 50257, 400_000, dtype=np.uint16))
    loader = streamtok.loader(data, seq_len=128, batch_size=8, split="all", num_workers=1, epochs=None)
    print(loader._metrics.dir, flush=True)
    end = time.monotonic() + limit_s
    for x, y in loader:  # a slow "model": the monitor sees a steady rate and some waiting
        time.sleep(0.002)
        if time.monotonic() > end:
            break
    """
)


class Trainer:
    def __init__(self, tmp_path, limit_s=60):
        env = {**os.environ, "STREAMTOK_RUN_DIR": str(tmp_path / "runs")}
        env.pop("STREAMTOK_METRICS", None)
        (tmp_path / "data").mkdir()
        self.data = tmp_path / "data"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAINER, str(self.data), str(limit_s)], stdout=subprocess.PIPE, text=True, env=env
        )
        with self.proc.stdout:
            self.run_dir = self.proc.stdout.readline().strip()
        assert self.run_dir, "the trainer did not start"
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    t = Trainer(tmp_path)
    yield t
    t.stop()


async def _until(pilot, predicate, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        if predicate():
            return True
    return False


def _rate_shown(app):
    text = app.panel_text("tokens-rate")
    return text not in ("0", "-", "") and app.snapshot["throughput"]["batches"] > 0


def test_app_shows_live_tokens_and_memory(trainer):
    async def scenario():
        app = MonitorApp(Sampler(run_dir=trainer.run_dir), interval_s=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await _until(pilot, lambda: _rate_shown(app) and "worker 0" in app.panel_text("memory"))
            snap = app.snapshot
            assert snap["throughput"]["tokens_per_s"] > 0
            assert app.panel_text("tokens-rate")[0].isdigit()
            memory = app.panel_text("memory")
            trainer_row = next(line for line in memory.splitlines() if line.startswith("trainer"))
            assert trainer_row.split()[1].endswith("%")  # CPU share
            assert trainer_row.split()[2].endswith("MiB")  # anonymous PSS, binary units
            assert "Σ anon" in memory and "mapped files" in memory
            assert "running" in app.panel_text("run").lower() and "train_000.bin" in app.panel_text("cache")
            assert "every 0.2s" in str(app.query_one("#title").content)  # the sampling interval, stated
            await pilot.press("p")
            assert "PAUSED" in str(app.query_one("#title").content)
            await pilot.press("p")
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            shown = app.snapshot["time"]
            assert await _until(pilot, lambda: app.snapshot["time"] > shown)  # redrawn under the help
            await pilot.press("x")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.resize_terminal(120, 40)
            await pilot.pause(0.3)
            assert app.panel_text("tokens-rate")[0].isdigit()
            await pilot.press("q")
        assert app.return_code in (0, None)

    asyncio.run(scenario())


def test_monitor_survives_the_trainer_being_killed(trainer):
    async def scenario():
        app = MonitorApp(Sampler(run_dir=trainer.run_dir), interval_s=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await _until(pilot, lambda: _rate_shown(app))
            os.kill(trainer.pid, signal.SIGKILL)
            trainer.proc.wait(timeout=10)
            assert await _until(pilot, lambda: "ENDED" in app.panel_text("run"))
            assert "final counters" in app.panel_text("run")
            assert "ENDED" in str(app.query_one("#title").content)
            assert app.panel_text("tokens-rate") == "-"  # no rate for an ended run
            final = metrics.StatsReader(trainer.run_dir).slot(0)
            assert app.snapshot["throughput"]["batches"] == final["batches"]  # the final counters
            assert f"{final['batches']:,} batches (final)" in app.panel_text("throughput-detail")
            await pilot.pause(0.5)  # and it keeps running
            assert app.is_running

    asyncio.run(scenario())


def _wait_for_batches(run_dir, timeout_s=15):
    from streamtok.metrics import publish as metrics

    reader, deadline = metrics.StatsReader(run_dir), time.monotonic() + timeout_s
    while reader.slot(0)["batches"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_once_json_has_every_figure(trainer, capsys):
    _wait_for_batches(trainer.run_dir)
    assert cli.main(["--once", "--json", "--interval", "0.3"]) == 0  # no --run: the newest live run
    snap = json.loads(capsys.readouterr().out)
    assert snap["run"]["dir"] == trainer.run_dir and snap["run"]["status"] == "running"
    for key in ("mode", "seq_len", "batch_size", "num_workers", "rank", "world_size", "epoch", "step", "progress", "eta_s"):
        assert key in snap["run"]
    tp = snap["throughput"]
    assert tp["tokens_per_s"] > 0 and tp["batches_per_s"] > 0 and 0 <= tp["wait_fraction"] <= 1
    assert tp["wait_source"] == "loop" and tp["prefetch_thread_wait_fraction"] is None  # no prefetch thread
    assert [w["worker_id"] for w in tp["workers"]] == [0] and tp["workers"][0]["batches_per_s"] > 0
    mem = snap["memory"]
    roles = {p["role"] for p in mem["processes"]}
    assert {"trainer", "worker 0"} <= roles
    assert mem["pss_total"] > 0 and mem["mem_available"] > 0
    assert all(p["rss"] == p["rss_anon"] + p["rss_file"] + p["rss_shmem"] for p in mem["processes"])
    pc = snap["page_cache"]
    assert [os.path.basename(s["path"]) for s in pc["shards"]] == ["train_000.bin", "train_001.bin"]
    assert pc["dataset_bytes"] == sum(os.path.getsize(s["path"]) for s in pc["shards"])
    assert pc["page_bytes"] > 0 and pc["hit_ratio"] is not None and 0 <= pc["hit_ratio"] <= 1
    for key in ("disk_read_bytes_per_s", "read_amplification", "page_floor", "resident_bytes", "evicted_bytes", "recently_evicted_bytes"):
        assert key in pc
    assert cli.main(["--run", trainer.run_dir, "--once", "--interval", "0.2"]) == 0  # the same as text
    text = capsys.readouterr().out
    assert "tokens/s" in text and "trainer" in text and "Σ anon" in text and "train_001.bin" in text and "RUNNING" in text


def test_pid_mode_shows_os_figures_and_files(trainer, capsys):
    _wait_for_batches(trainer.run_dir)
    glob = str(trainer.data / "*.bin")
    assert cli.main(["--pid", str(trainer.pid), "--files", glob, "--json", "--interval", "0.2"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert snap["throughput"] is None and snap["run"]["pid"] == trainer.pid
    assert len(snap["page_cache"]["shards"]) == 2 and snap["page_cache"]["resident_bytes"] > 0
    assert len(snap["memory"]["processes"]) >= 2  # the trainer and its worker


def test_cli_lists_runs_and_refuses_without_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "empty"))
    assert cli.main(["--once", "--json"]) == 2
    assert "no live streamtok run" in capsys.readouterr().err
    assert cli.main(["--pid", "999999999", "--json"]) == 2
    assert cli.main(["--list"]) == 0 and capsys.readouterr().out == ""


def test_console_script_runs(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "streamtok-monitor")
    if not os.path.exists(script):
        pytest.skip("package not installed with its console scripts")
    env = {**os.environ, "STREAMTOK_RUN_DIR": str(tmp_path / "none")}
    done = subprocess.run([script, "--once", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "no live streamtok run" in done.stderr


def test_default_run_is_the_busiest_live_one(tmp_path, monkeypatch):
    """A training loader and a newer, idle validation loader: the monitor opens the training one."""
    from _util import make_shards
    from streamtok_monitor.cli import busiest

    import streamtok

    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    make_shards(tmp_path / "d", [4000, 4000, 2000])
    train = streamtok.loader(tmp_path / "d", seq_len=16, batch_size=4)
    for _, _ in zip(range(20), train):
        pass
    val = streamtok.loader(tmp_path / "d", seq_len=16, batch_size=4, split="val", mode="sequential")
    live = [r for r in streamtok.metrics.publish.list_runs() if r.alive]
    assert len(live) == 2 and live[0].dir == val._metrics.dir  # newest first
    assert busiest(live).dir == train._metrics.dir


GOOD_MANIFEST = {
    "layout_version": 1, "pid": 1, "created": 1.0, "mode": "shuffle", "seq_len": 8, "batch_size": 2, "seed": 0,
    "epochs": 1, "rank": 0, "world_size": 1, "steps_per_epoch": 10, "step_samples": 2, "num_workers": 0,
    "token_bytes": 2, "shards": [{"path": "/x.bin", "n_tokens": 100, "offset": 0, "size": 200}],
}


@pytest.mark.parametrize(
    "change,problem",
    [
        ({"batch_size": 0}, "'batch_size' is 0"),
        ({"seq_len": "8"}, "'seq_len' is '8'"),
        ({"shards": "x"}, "'shards'"),
        ({"shards": [{"path": 3}]}, "'shards'"),
        ({"mode": None}, "'mode'"),
        ({"rank": 1}, "'rank' 1 is not below"),
        ({"pid": "1"}, "'pid'"),
        ({"step_samples": None}, "'step_samples'"),
        ({"token_bytes": 3}, "'token_bytes'"),
        (None, "no 'steps_per_epoch'"),
        ([], "a JSON list"),
    ],
)
def test_cli_names_a_malformed_manifest_in_one_line(tmp_path, capsys, change, problem):
    run = tmp_path / "run"
    run.mkdir()
    if change is None:
        m = {k: v for k, v in GOOD_MANIFEST.items() if k != "steps_per_epoch"}
    elif isinstance(change, list):
        m = change
    else:
        m = {**GOOD_MANIFEST, **change}
    (run / "manifest.json").write_text(json.dumps(m))
    assert cli.main(["--run", str(run), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and "manifest.json" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["--interval", "nan"], "--interval must be a positive number"),
        (["--interval", "inf"], "--interval must be a positive number"),
        (["--interval", "0"], "--interval must be a positive number"),
        (["--pid", "-3", "--once"], "no process -3"),
    ],
)
def test_cli_refuses_bad_settings_in_one_line(tmp_path, monkeypatch, capsys, argv, problem):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "none"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err


@pytest.mark.parametrize("args", [["--once"], ["--list"]])
def test_cli_run_root_that_is_a_file(tmp_path, monkeypatch, capsys, args):
    root = tmp_path / "runs"
    root.write_text("a file")
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(root))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(root) in err and "Not a directory" in err


def test_cli_stats_file_missing_or_short(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(GOOD_MANIFEST))
    assert cli.main(["--run", str(run), "--once"]) == 2
    assert "stats.bin" in capsys.readouterr().err
    (run / "stats.bin").write_bytes(b"\0" * 24)
    assert cli.main(["--run", str(run), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shorter than a stats header" in err


def _header(n_slots: int = 1) -> bytes:
    from streamtok.metrics.layout import HEADER_WORDS, MAGIC, SLOT_WORDS

    words = [MAGIC, 1, n_slots, SLOT_WORDS, 0, 0] + [0] * (HEADER_WORDS - 6) + [0] * (SLOT_WORDS * n_slots)
    return struct.pack(f"<{len(words)}q", *words)


def test_cli_stats_file_not_whole_words(tmp_path, capsys):
    # Issue 19 item 10: a stats.bin whose length is not a multiple of 8 was a traceback.
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(GOOD_MANIFEST))
    (run / "stats.bin").write_bytes(_header() + b"abc")
    assert cli.main(["--run", str(run), "--once"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a whole number of 8-byte words" in err and "stats.bin" in err


def test_cli_stats_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path, capsys):
    # Issue 19 item 10: opening a FIFO blocked until a writer came: the monitor hung.
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(GOOD_MANIFEST))
    os.mkfifo(run / "stats.bin")
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("the monitor hangs on a FIFO"))
    signal.alarm(20)
    try:
        assert cli.main(["--run", str(run), "--once"]) == 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a regular file" in err and "stats.bin" in err


def test_cli_list_skips_an_impossible_creation_time(tmp_path, monkeypatch, capsys):
    # Issue 19 item 10: "created": 1e300 passed the manifest check and then overflowed. The
    # run directory's manifest check (streamtok.metrics.rundir) now refuses a creation time that is
    # not a time: such a directory is not a streamtok run, and --list lists the good ones.
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path))
    for name, created in (("bad", 1e300), ("good", 1000.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({**GOOD_MANIFEST, "created": created}))
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr()
    assert str(tmp_path / "good") in out.out and str(tmp_path / "bad") not in out.out and "Traceback" not in out.err


def test_cli_list_prunes_ended_runs_past_the_bound(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path))
    for k in range(metrics.KEEP_ENDED + 2):
        run = tmp_path / f"run{k:02d}"
        run.mkdir()
        (run / "manifest.json").write_text(json.dumps({**GOOD_MANIFEST, "pid": 999_999_999, "created": 1000.0 + k, **metrics.identity()}))
    assert cli.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == metrics.KEEP_ENDED and not (tmp_path / "run00").exists() and (tmp_path / "run11").exists()
