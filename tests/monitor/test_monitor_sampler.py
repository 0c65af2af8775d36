"""streamtok_monitor.watcher.Sampler against a loader in this process: every figure true."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from streamtok_monitor import panels, probes
from streamtok_monitor.watcher import Sampler

import streamtok
from streamtok._formats import write_shard
from streamtok.metrics import publish as metrics


@pytest.fixture(autouse=True)
def run_root(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "data" / "s_000.bin"
    write_shard(path, np.random.default_rng(3).integers(0, 50257, 60_000, dtype=np.uint16))
    return path


@pytest.mark.parametrize("workers", [0, 2])
def test_waiting_is_all_the_time_the_loop_spends_in_next(shard, workers):
    """Issue 10.2: the published wait against the loop's own timing of next() (split included)."""
    loader = streamtok.loader(shard, seq_len=512, batch_size=16, split="all", epochs=2, num_workers=workers)
    it, own = iter(loader), 0
    while True:
        t0 = time.perf_counter_ns()
        try:
            next(it)
        except StopIteration:
            own += time.perf_counter_ns() - t0
            break
        own += time.perf_counter_ns() - t0
        time.sleep(0.002)  # a "model" slower than 1 ms: every batch is timed
    wait = metrics.StatsReader(loader._metrics.dir).slot(0)["wait_ns"]
    assert abs(wait - own) <= 0.1 * own


def test_ended_run_shows_the_final_counters_and_no_rates(shard):
    """Issue 10.3: batches taken after the last sample show once the trainer is seen gone."""
    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all", epochs=3)
    watch = Sampler(run_dir=loader._metrics.dir)
    it = iter(loader)
    for _ in range(20):
        next(it)
    watch.sample()
    time.sleep(0.01)
    watch.sample()
    for _ in range(33):
        next(it)
    it.close()
    watch.pid = 999_999_999  # the trainer is gone
    snap = watch.sample()
    final = metrics.StatsReader(loader._metrics.dir).slot(0)
    tp = snap["throughput"]
    assert (tp["batches"], tp["tokens"]) == (final["batches"], final["tokens"]) == (53, 53 * 400)
    assert tp["tokens_per_s"] is None and tp["wait_fraction"] is None and snap["run"]["eta_s"] is None
    assert snap["run"]["status"] == "ended" and snap["run"]["step"] == final["offset"] // 4
    assert "(final)" in panels.throughput_detail(snap).plain and "final counters" in panels.run_panel(snap).plain
    # Issue 21 item 5: no live-looking memory beside "no processes".
    mem = snap["memory"]
    assert mem["processes"] == [] and mem["pss_anon_total"] is None and mem["rss_total"] is None
    assert "Σ anon -" in panels.memory_panel(snap).plain


def test_once_snapshot_has_fresh_slow_figures_with_their_time(shard):
    """Issue 21 item 5: --once showed residency one interval old; every figure is of its time."""
    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all", epochs=None)
    watch = Sampler(run_dir=loader._metrics.dir)
    first = watch.sample()
    assert first["sampling"]["slow_time"] == first["time"]
    later = watch.sample()  # within slow_interval_s: the slow probes are not rerun
    assert later["sampling"]["slow_time"] == first["time"] < later["time"]
    fresh = watch.sample(fresh=True)
    assert fresh["sampling"]["slow_time"] == fresh["time"]


def test_cpu_share_per_process_and_anon_headline(shard):
    """Issues 10.8, 10.9: CPU% per process; Σ anon is the headline, page cache apart."""
    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all", epochs=None)
    watch = Sampler(run_dir=loader._metrics.dir)
    it = iter(loader)
    watch.sample()
    t_end = time.monotonic() + 0.3
    while time.monotonic() < t_end:  # busy: the trainer uses most of a core
        next(it)
    snap = watch.sample()
    me = next(p for p in snap["memory"]["processes"] if p["pid"] == os.getpid())
    assert me["role"] == "trainer" and 0.2 < me["cpu"] <= 1.5 * os.cpu_count()
    mem = snap["memory"]
    assert 0 < mem["pss_anon_total"] < mem["pss_total"] and mem["pss_file_total"] > 0
    assert len(snap["histories"]["wait"]) == 1 and len(snap["histories"]["disk"]) == 1  # issue 10.10
    text = panels.memory_panel(snap, 40).plain
    assert "Σ anon" in text and "mapped files" in text and "%" in text.splitlines()[1]


def test_expensive_probes_run_every_slow_interval_only(shard, monkeypatch):
    """Issue 10.7: smaps_rollup and residency are sampled less often than the cheap probes."""
    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all")
    calls = {"rollup": 0, "residency": 0}
    memory, residency = probes.memory, probes.residency

    def counted_memory(pid, rollup=True):
        calls["rollup"] += rollup
        return memory(pid, rollup=rollup)

    def counted_residency(path):
        calls["residency"] += 1
        return residency(path)

    monkeypatch.setattr(probes, "memory", counted_memory)
    monkeypatch.setattr(probes, "residency", counted_residency)
    watch = Sampler(run_dir=loader._metrics.dir, slow_interval_s=3600)
    snaps = [watch.sample()]
    first = dict(calls)
    snaps += [watch.sample() for _ in range(4)]
    assert calls == first and first["residency"] == 1 and first["rollup"] >= 1  # once per process
    assert all(s["memory"]["processes"][0]["pss"] > 0 for s in snaps)  # the last PSS is kept
    assert all(s["page_cache"]["dataset_bytes"] == os.path.getsize(shard) for s in snaps)


def test_the_monitor_and_metrics_never_import_torch():
    """Issue 10.7: no torch in the monitor's process (235 MB RSS and 2 s to start with it)."""
    code = (
        "import sys, streamtok, streamtok.metrics.publish, streamtok_monitor.cli, streamtok_monitor.app, "
        "streamtok_monitor.watcher, streamtok_monitor.pages; "
        "print(sorted(m for m in ('torch', 'torchdata') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_lazy_package_keeps_every_public_name():
    code = (
        "import streamtok, streamtok.build as _, streamtok.dataloader as _; from streamtok import CUDAPrefetcher, loader, StreamtokError; "
        "assert callable(streamtok.loader) and streamtok.loader is loader; "
        "assert all(getattr(streamtok, n) is not None for n in streamtok.__all__); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_pid_mode_says_what_it_knows(shard):
    """Issue 10.4: any process is 'attached', a 'process' not a 'trainer', with CPU and disk."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        watch = Sampler(pid=proc.pid, files=(str(shard),))
        watch.sample()
        time.sleep(0.05)
        snap = watch.sample()
    finally:
        proc.kill()
        proc.wait()
    assert snap["run"]["status"] == "attached" and snap["throughput"] is None
    assert [p["role"] for p in snap["memory"]["processes"]] == ["process"]
    text = panels.throughput_detail(snap).plain
    assert "CPU" in text and "disk" in text and "resident" in text
    assert "ATTACHED" in panels.run_panel(snap).plain


def test_amp_floor_is_the_pages_the_windows_span(shard):
    """Issue 10.6: the page floor is page bytes touched per token byte read."""
    loader = streamtok.loader(shard, seq_len=1023, batch_size=4, split="all", mode="random", epochs=None)
    watch = Sampler(run_dir=loader._metrics.dir)
    it = iter(loader)
    watch.sample()
    for _ in range(50):
        next(it)
    it.close()  # publishes the position now (else within 5 ms)
    pc = watch.sample()["page_cache"]
    assert pc["page_floor"] == pytest.approx(pc["page_bytes"] / (50 * 4 * 1024 * 2))
    assert 2.0 <= pc["page_floor"] <= 4.0  # a 2 KiB window spans 1-2 pages of 4 KiB: ~3x


def test_another_hosts_run_is_never_called_alive(shard, capsys):
    """Issue 9.2: a run root shared over NFS; a PID of another node means nothing here."""
    from streamtok_monitor import cli

    from streamtok._atomic import write_json_atomic

    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all")
    path = os.path.join(loader._metrics.dir, metrics.MANIFEST)
    write_json_atomic(path, {**metrics.read_manifest(loader._metrics.dir), "host": "node-17"})
    watch = Sampler(run_dir=loader._metrics.dir)
    assert watch.sample()["run"]["status"] == "ended"  # although this PID (ours) is alive
    assert cli.main(["--list"]) == 0
    assert capsys.readouterr().out.startswith("other")


def test_trainer_liveness_its_start_time_and_zombies(shard):
    """The trainer is alive while its PID is the process that started at the manifest's time
    and has not exited: a reused PID, a zombie (exited, not yet reaped) and a reaped process
    all read as ended, also after it was seen alive (the cheap per-sample check)."""
    import psutil

    from streamtok._atomic import write_json_atomic

    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all")
    path = os.path.join(loader._metrics.dir, metrics.MANIFEST)
    manifest = metrics.read_manifest(loader._metrics.dir)

    def watch(pid: int, start: float) -> Sampler:
        write_json_atomic(path, {**manifest, "pid": pid, "pid_start": start})
        return Sampler(run_dir=loader._metrics.dir)

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        start = psutil.Process(child.pid).create_time()
        assert watch(child.pid, start - 100).sample()["run"]["status"] == "ended"  # a reused PID
        live = watch(child.pid, start)
        assert live.sample()["run"]["status"] in ("running", "idle")
        child.stdin.close()  # it exits; unreaped, a zombie
        deadline = time.monotonic() + 10
        while probes.faults(child.pid)["state"] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert probes.faults(child.pid)["state"] == "Z"
        assert live.sample()["run"]["status"] == "ended"
        assert watch(child.pid, start).sample()["run"]["status"] == "ended"
    finally:
        child.kill()
        child.wait()
    assert watch(child.pid, start).sample()["run"]["status"] == "ended"  # reaped: no such process


def test_pss_is_read_at_every_other_slow_round_and_fresh_when_asked(shard, monkeypatch):
    """smaps_rollup (the costliest probe) runs at every ``pss_every``-th residency round; each
    snapshot says when its PSS figures were read; ``fresh`` reads everything now."""
    loader = streamtok.loader(shard, seq_len=100, batch_size=4, split="all")
    rollups, memory = [], probes.memory

    def counted_memory(pid, rollup=True):
        rollups.append(rollup)
        return memory(pid, rollup=rollup)

    monkeypatch.setattr(probes, "memory", counted_memory)
    watch = Sampler(run_dir=loader._metrics.dir, slow_interval_s=0.0)
    snaps = []
    for _ in range(5):
        rollups.clear()
        watch._slow_at = 0.0  # a residency round every sample, whatever the last one cost
        snaps.append(watch.sample())
        assert snaps[-1]["sampling"]["slow_time"] == snaps[-1]["time"]
        assert any(rollups) == (len(snaps) % 2 == 1)  # rounds 1, 3, 5
    assert [s["sampling"]["pss_time"] for s in snaps] == [snaps[i]["time"] for i in (0, 0, 2, 2, 4)]
    assert all(s["memory"]["processes"][0]["pss"] > 0 for s in snaps)  # the last PSS is kept
    fresh = watch.sample(fresh=True)
    assert fresh["sampling"]["pss_time"] == fresh["sampling"]["slow_time"] == fresh["time"]
