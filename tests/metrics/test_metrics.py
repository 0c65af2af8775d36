"""streamtok.metrics.publish: what the loader publishes, read back as the monitor reads it."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import streamtok
from streamtok._atomic import write_json_atomic
from streamtok._formats import write_shard
from streamtok.metrics import publish as metrics


@pytest.fixture(autouse=True)
def run_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(root))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)
    return root


@pytest.fixture
def one_shard(tmp_path):
    """One llm.c uint16 shard (1024-byte header) of 40,000 random tokens."""
    tokens = np.random.default_rng(1).integers(0, 50257, 40_000, dtype=np.uint16)
    path = tmp_path / "data" / "one_000.bin"
    write_shard(path, tokens)
    return path


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
def test_trainer_slot_counts_what_the_loop_received(one_shard, mode):
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", mode=mode)
    got = sum(1 for _ in loader)
    reader = metrics.StatsReader(loader._metrics.dir)
    (slot,) = reader.slots()
    assert slot["role"] == metrics.ROLE_TRAINER and slot["pid"] == os.getpid()
    assert slot["batches"] == got > 0
    assert slot["tokens"] == got * 4 * 100
    state = loader.state_dict()["sampler"]
    assert (slot["epoch"], slot["offset"]) == (state["epoch"], state["offset"])
    assert slot["iterating"] == 0 and slot["passes"] == 1
    assert slot["wait_ns"] > 0


def test_workers_write_their_own_slots(one_shard):
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", num_workers=2)
    got = sum(1 for _ in loader)
    slots = metrics.StatsReader(loader._metrics.dir).slots()
    trainer = [s for s in slots if s["role"] == metrics.ROLE_TRAINER]
    workers = sorted((s for s in slots if s["role"] == metrics.ROLE_WORKER), key=lambda s: s["worker_id"])
    assert len(trainer) == 1 and trainer[0]["batches"] == got
    assert [w["worker_id"] for w in workers] == [0, 1]
    assert len({w["pid"] for w in workers} | {os.getpid()}) == 3
    assert sum(w["batches"] for w in workers) == got
    assert sum(w["tokens"] for w in workers) == got * 4 * 100  # B*T, as the trainer counts (issue 10.5)


def test_manifest_names_config_and_shards(one_shard):
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", num_workers=1)
    m = metrics.read_manifest(loader._metrics.dir)
    assert m["pid"] == os.getpid() and m["num_workers"] == 1
    assert (m["mode"], m["seq_len"], m["batch_size"], m["rank"], m["world_size"]) == ("shuffle", 100, 4, 0, 1)
    assert m["shards"] == [{"path": str(one_shard), "n_tokens": 40_000, "offset": 1024, "size": os.path.getsize(one_shard)}]
    runs = metrics.list_runs()
    assert runs[0].dir == loader._metrics.dir and runs[0].alive


def test_prefetcher_records_its_depth(one_shard):
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all")
    pf = streamtok.CUDAPrefetcher(loader, device="cpu", depth=3)
    n = sum(1 for _ in pf)
    assert metrics.read_manifest(loader._metrics.dir)["prefetch"] == {"depth": 3, "device": "cpu", "background": False}
    assert metrics.StatsReader(loader._metrics.dir).slot(0)["batches"] == n


def test_off_by_flag_or_env(one_shard, run_root, monkeypatch):
    off = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", metrics=False)
    assert off._metrics is None
    monkeypatch.setenv("STREAMTOK_METRICS", "0")
    assert streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all")._metrics is None
    assert list(off)  # still loads
    assert not run_root.exists() or not os.listdir(run_root)
    on = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", metrics=True)
    assert on._metrics is not None


def test_same_stream_with_and_without_metrics(one_shard):
    a = [x for x, _ in streamtok.loader(one_shard, seq_len=50, batch_size=3, split="all", num_workers=2)]
    b = [x for x, _ in streamtok.loader(one_shard, seq_len=50, batch_size=3, split="all", num_workers=2, metrics=False)]
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_unwritable_root_turns_metrics_off_with_a_warning(one_shard, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(blocker / "runs"))
    with pytest.warns(UserWarning, match="metrics are off"):
        loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all")
    assert loader._metrics is None and list(loader)


def test_torn_slot_is_retried_then_returned(tmp_path):
    pub = metrics.RunPublisher({"x": 1}, n_slots=1, root=str(tmp_path))
    w = pub.slot(0, metrics.ROLE_TRAINER)
    w.publish(1, 10, 5, 0, 7)
    w.w[metrics.SEQ] += 1  # a writer killed inside an update leaves seq odd
    got = metrics.StatsReader(pub.dir).slot(0, retries=3)
    assert (got["batches"], got["tokens"], got["offset"]) == (1, 10, 7)


WRITER = textwrap.dedent(
    """
    import sys, time
    from streamtok.metrics import publish as metrics
    pub = metrics.RunPublisher({}, n_slots=1, root=sys.argv[1])
    w = pub.slot(0, metrics.ROLE_TRAINER)
    print(pub.dir, flush=True)
    n = 0
    while True:  # a loader's trainer publishes every 5 ms; here every ~0.1 ms
        n += 1
        time.sleep(0.0001)
        w.publish(n, 3 * n, 1, n // 1000, n)
    """
)


def test_stats_survive_a_killed_writer(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    with proc.stdout:
        run_dir = proc.stdout.readline().strip()
    try:
        reader = metrics.StatsReader(run_dir)
        deadline = time.monotonic() + 20
        while reader.slot(0)["batches"] < 1_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = [reader.slot(0) for _ in range(200)]  # concurrent reads: never torn
        assert all(s["tokens"] == 3 * s["batches"] and s["offset"] == s["batches"] for s in seen)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    last = reader.slot(0)
    assert last["batches"] >= 1_000 and last["tokens"] == 3 * last["batches"]
    manifest = json.loads(open(os.path.join(run_dir, metrics.MANIFEST)).read())
    assert not metrics.pid_alive(manifest["pid"], manifest["pid_start"])
    assert [r.alive for r in metrics.list_runs(str(tmp_path))] == [False]


def test_prune_keeps_live_and_newest_ended(tmp_path):
    publishers = [metrics.RunPublisher({}, n_slots=1, root=str(tmp_path)) for _ in range(4)]  # kept alive
    for d in (p.dir for p in publishers):
        m = metrics.read_manifest(d)
        m["pid"] = 999_999_999  # a PID that cannot exist: an ended run
        write_json_atomic(os.path.join(d, metrics.MANIFEST), m)
    live = metrics.RunPublisher({}, n_slots=1, root=str(tmp_path))
    metrics.prune_runs(str(tmp_path), keep=2)
    runs = metrics.list_runs(str(tmp_path))
    assert [r.alive for r in runs].count(False) == 2 and any(r.dir == live.dir for r in runs)


def _ended(pub, **extra):
    m = {**pub.manifest, "pid": 999_999_999, **extra}  # a PID that cannot exist: an ended run
    write_json_atomic(os.path.join(pub.dir, metrics.MANIFEST), m)


def test_prune_bound_keeps_ten_ended_runs_by_default(tmp_path):
    # Issue 22 item 6: --list showed every past run (35 after a day of tests).
    pubs = [metrics.RunPublisher({}, n_slots=1, root=str(tmp_path)) for _ in range(metrics.KEEP_ENDED + 3)]
    for k, p in enumerate(pubs):
        _ended(p, created=1000.0 + k)
    live = metrics.RunPublisher({}, n_slots=1, root=str(tmp_path))  # prunes at start
    runs = metrics.list_runs(str(tmp_path))
    assert metrics.KEEP_ENDED == 10 and [r.alive for r in runs].count(False) == 10 and live.dir in {r.dir for r in runs}
    assert {r.dir for r in runs if not r.alive} == {p.dir for p in pubs[3:]}  # the newest ten


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a run to another user")
def test_prune_never_deletes_another_users_run(tmp_path):
    theirs, ours = (metrics.RunPublisher({}, n_slots=1, root=str(tmp_path)) for _ in range(2))
    for p in (theirs, ours):
        _ended(p)
    os.chown(theirs.dir, 4242, 4242)
    metrics.prune_runs(str(tmp_path), keep=0)
    assert os.path.exists(theirs.dir) and not os.path.exists(ours.dir)


def test_a_dropped_publisher_removes_its_run_but_not_at_exit(tmp_path):
    kept = metrics.RunPublisher({}, n_slots=1, root=str(tmp_path))
    dropped = metrics.RunPublisher({}, n_slots=1, root=str(tmp_path)).dir
    assert not os.path.exists(dropped) and os.path.exists(kept.dir)
    assert kept._cleanup.atexit is False


def test_counting_gather_counts_worker_batches(tmp_path):
    calls = []
    pub = metrics.RunPublisher({}, n_slots=2, root=str(tmp_path))
    slot = pub.slot(1, metrics.ROLE_WORKER, 0)
    count = metrics.counting_gather(lambda s, **kw: calls.append(kw) or len(calls), slot, tokens=33)
    assert [count(np.arange(3)), count(np.arange(3), shared=True, into="slot")] == [1, 2]
    assert calls == [{"shared": False}, {"shared": True, "into": "slot"}]
    got = metrics.StatsReader(pub.dir).slot(1)
    assert (got["batches"], got["tokens"], got["role"], got["pid"]) == (2, 66, metrics.ROLE_WORKER, os.getpid())


class _Position:
    batch_size, seq_len, epoch, offset = 2, 8, 0, 0


def _meter_run(tmp_path, n, source_s, consumer_s):
    pub = metrics.RunPublisher({}, n_slots=1, root=str(tmp_path))

    def source():
        for i in range(n):
            if source_s:
                time.sleep(source_s)
            _Position.offset = i  # as the loader advances
            yield i

    t0 = time.perf_counter_ns()
    for _ in metrics.Meter(source(), pub.slot(0, metrics.ROLE_TRAINER), _Position):
        if consumer_s:
            time.sleep(consumer_s)
    return metrics.StatsReader(pub.dir).slot(0), time.perf_counter_ns() - t0


def test_meter_measures_the_wait_for_a_slow_source(tmp_path):
    slot, total_ns = _meter_run(tmp_path, 60, source_s=0.003, consumer_s=0)
    assert slot["batches"] == 60 and slot["tokens"] == 60 * 16 and slot["iterating"] == 0
    assert 0.7 * total_ns < slot["wait_ns"] <= 1.3 * total_ns


def test_meter_sees_little_wait_for_a_fast_source(tmp_path):
    slot, total_ns = _meter_run(tmp_path, 60, source_s=0, consumer_s=0.003)
    assert slot["batches"] == 60 and slot["wait_ns"] < 0.2 * total_ns


def test_meter_samples_a_fast_loop_and_still_counts_every_batch(tmp_path):
    slot, total_ns = _meter_run(tmp_path, 200_000, source_s=0, consumer_s=0)
    assert slot["batches"] == 200_000 and slot["offset"] == 199_999
    assert 0 < slot["wait_ns"] < total_ns


def test_streamtok_never_imports_the_dashboard():
    code = "import sys, streamtok, streamtok.metrics.publish; print(sorted(m for m in ('textual', 'streamtok_monitor') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]"


def test_background_prefetcher_publishes_the_training_loops_figures(one_shard):
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", num_workers=2)
    pf = streamtok.CUDAPrefetcher(loader, device="cpu", background=True)
    it, taken = iter(pf), 0
    t0 = time.perf_counter_ns()
    for _ in it:  # a slow "model": the loop hardly waits, the prefetch thread runs ahead
        taken += 1
        time.sleep(0.003)
        if taken == 40:
            break
    it.close()
    total_ns = time.perf_counter_ns() - t0
    slots = {s["role"]: s for s in metrics.StatsReader(loader._metrics.dir).slots()}
    loop, thread = slots[metrics.ROLE_CONSUMER], slots[metrics.ROLE_TRAINER]
    assert loop["slot"] == 3 and loop["pid"] == os.getpid() and loop["iterating"] == 0 and loop["passes"] == 1
    assert (loop["batches"], loop["tokens"]) == (40, 40 * 4 * 100)
    assert thread["batches"] >= 40 + pf.depth  # the loader's count includes the batches in flight
    assert (loop["epoch"], loop["offset"]) == (0, pf.state_dict()["sampler"]["offset"]) != (thread["epoch"], thread["offset"])
    assert 0 < loop["wait_ns"] < total_ns


def test_consumer_slot_meters_the_loop_without_a_background_thread_too(one_shard):
    # Issue 21: without a thread the prefetcher stages ahead inside the loop's next(); the
    # loader's meter would count that as the loop's work, so the loop has its own slot.
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", num_workers=1)
    n = sum(1 for _ in streamtok.CUDAPrefetcher(loader, device="cpu", background=False))
    reader = metrics.StatsReader(loader._metrics.dir)
    roles = [s["role"] for s in reader.slots()]
    assert reader.n_slots == 3 and roles == [metrics.ROLE_TRAINER, metrics.ROLE_WORKER, metrics.ROLE_CONSUMER]
    assert reader.slot(0)["batches"] == reader.slot(2)["batches"] == n
    assert metrics.loop_slot(reader.slots())["role"] == metrics.ROLE_CONSUMER


# -- metrics never stop training (issue 9, items 1-3) ---------------------------------------

TOKENIZE_MANIFEST = {
    "version": 1, "complete": True, "settings": {"encoding": "gpt2", "shard_tokens": 100_000_000},
    "shards": [{"name": "fw_train_000000.bin", "n_tokens": 1000}], "totals": {"tokens": 1000},
}
LOCAL_RUN = {"layout_version": 1, "pid": 1, "created": 1.0}


@pytest.mark.parametrize(
    "content",
    [
        {}, [], [LOCAL_RUN], "a string", 42, None, TOKENIZE_MANIFEST,
        {"layout_version": 1, "created": 1.0},  # no pid
        {"layout_version": 1, "pid": 1},  # no created
        {"layout_version": 1, "pid": "1", "created": 1.0},
        {"layout_version": 1, "pid": True, "created": 1.0},
        {"layout_version": 1, "pid": -5, "created": 1.0},
        {"layout_version": 1, "pid": 1, "created": "yesterday"},
        {"layout_version": 1, "pid": 1, "created": 1.0, "pid_start": "x"},
        {"layout_version": 2, "pid": 1, "created": 1.0},
        {"pid": 1, "created": 1.0},  # no layout_version
        b"\x00not json{",
        b"",
    ],
    ids=lambda c: repr(c)[:40],
)
def test_foreign_or_malformed_manifests_are_skipped_and_kept(one_shard, run_root, content):
    foreign = run_root / "not-a-run"
    foreign.mkdir(parents=True)
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    (foreign / "manifest.json").write_bytes(raw)
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all")
    assert loader._metrics is not None and sum(1 for _ in loader) > 0
    runs = metrics.list_runs()
    assert [r.dir for r in runs] == [loader._metrics.dir]
    metrics.prune_runs(str(run_root), keep=0)
    assert (foreign / "manifest.json").read_bytes() == raw  # not ours: never deleted
    with pytest.raises(metrics.RunDirError, match="not-a-run"):
        metrics.read_manifest(str(foreign))


def test_a_manifest_that_is_a_directory_is_skipped(one_shard, run_root):
    (run_root / "odd" / "manifest.json").mkdir(parents=True)
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all")
    assert [r.dir for r in metrics.list_runs()] == [loader._metrics.dir]


@pytest.mark.parametrize("other", [{"host": "another-node"}, {"boot_id": "0000-earlier-boot"}, {"pid_ns": 1}, {"host": None}])
def test_prune_deletes_only_ended_runs_of_this_host_boot_and_namespace(tmp_path, other):
    dead = 999_999_999  # a PID that cannot exist
    ours = metrics.RunPublisher({}, n_slots=1, root=str(tmp_path))
    theirs = metrics.RunPublisher({}, n_slots=1, root=str(tmp_path))
    for pub, extra in ((ours, {}), (theirs, other)):
        m = {**pub.manifest, "pid": dead, **extra}
        if extra.get("host", "") is None:
            del m["host"]  # a manifest of an older streamtok: no identity, so never judged here
        write_json_atomic(os.path.join(pub.dir, metrics.MANIFEST), m)
    runs = {r.dir: r for r in metrics.list_runs(str(tmp_path))}
    assert runs[ours.dir].local and not runs[theirs.dir].local and not runs[theirs.dir].alive
    metrics.prune_runs(str(tmp_path), keep=0)
    assert not os.path.exists(ours.dir) and os.path.exists(theirs.dir)


def test_manifest_records_where_the_pid_lives(one_shard):
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all")
    m = metrics.read_manifest(loader._metrics.dir)
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert m["boot_id"] == f.read().strip()
    assert m["host"] == __import__("socket").gethostname() and m["pid_ns"] == os.stat("/proc/self/ns/pid").st_ino


def _two_passes(loader, wrap, during=None):
    """Every x of two passes over ``loader`` (through ``wrap``); ``during()`` after 3 batches."""
    out = []
    for p in range(2):
        for i, batch in enumerate(wrap(loader)):
            out.append(batch[0].clone())
            if p == 0 and i == 2 and during is not None:
                during()
    return out


_WRAPS = {
    "direct": (0, lambda ld: ld),
    "workers2": (2, lambda ld: ld),
    "prefetcher": (0, lambda ld: streamtok.CUDAPrefetcher(ld, device="cpu", depth=2)),
    "prefetcher-thread": (2, lambda ld: streamtok.CUDAPrefetcher(ld, device="cpu", depth=2, background=True)),
}


@pytest.mark.parametrize("fault", ["run-dir-removed", "disk-full"])
@pytest.mark.parametrize("how", list(_WRAPS))
def test_training_finishes_with_the_same_batches_whatever_happens_to_metrics(one_shard, monkeypatch, capfd, how, fault):
    workers, wrap = _WRAPS[how]

    def make(metrics_on):
        return streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all", num_workers=workers, metrics=metrics_on)

    clean = _two_passes(make(False), wrap)
    loader = make(True)
    run_dir = loader._metrics.dir
    during = None
    if fault == "run-dir-removed":  # a tmp cleaner, or another node's pruning, in another process
        def during():
            subprocess.run(["rm", "-rf", run_dir], check=True)
    else:  # ENOSPC from now on, on every metrics write (inherited by forked workers)
        def full(*a, **kw):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(metrics._atomic, "write_json_atomic", full)
        monkeypatch.setattr(metrics, "open", full, raising=False)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _two_passes(loader, wrap, during)
    assert len(got) == len(clean) > 6 and all(np.array_equal(a, b) for a, b in zip(got, clean))
    off = [w for w in caught if "metrics are off" in str(w.message)]
    assert len(off) == 1 and loader._metrics.off  # said once, by the trainer
    assert "metrics are off" not in capfd.readouterr().err  # and not again by each worker


# -- a mixture's per-source counts (issue 12, item 6) --------------------------------------


@pytest.fixture
def three_sources(tmp_path):
    """Three sources of 12,000, 6,000 and 2,000 random uint16 tokens, one shard each."""
    rng = np.random.default_rng(2)
    out = {}
    for name, n in (("web", 12_000), ("code", 6_000), ("math", 2_000)):
        path = tmp_path / "mix" / f"{name}_000.bin"
        write_shard(path, rng.integers(0, 50257, n, dtype=np.uint16))
        out[name] = [path]
    return out


def _published(slot):
    return slot["sources"]["step"], slot["sources"]["windows"], [(r["windows"], r["tokens"], r["target"], r["weight"]) for r in slot["sources"]["rows"]]


def _reported(report, step, windows):
    return step, windows, [(r["windows"], r["tokens"], r["target"], r["weight"]) for r in report]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_mixture_publishes_per_source_counts(three_sources, num_workers):
    schedule = [(0, {"web": 0.6, "code": 0.3, "math": 0.1}), (20, {"web": 0.2, "code": 0.3, "math": 0.5})]
    loader = streamtok.loader(three_sources, weights=schedule, seq_len=50, batch_size=6, split="all", num_workers=num_workers)
    mix = loader.collator.source
    reader = metrics.StatsReader(loader._metrics.dir)
    assert reader.n_sources == 3
    it = iter(loader)
    for k in range(1, 41):
        next(it)
        if k % 10 == 0:  # mid-pass: whatever was stored last is one position's, all of it
            slot = reader.slot(0)
            if slot["batches"]:
                step, total, rows = _published(slot)
                assert total == slot["batches"] * 6 == step * 6 == sum(r[0] for r in rows)
                assert (step, total, rows) == _reported(mix.report_at(total, [r[0] for r in rows]), step, total)
    it.close()
    slot = reader.slot(0)
    assert slot["batches"] == 40 and _published(slot) == _reported(mix.report(), mix.step, mix.windows)
    assert metrics.source_report(loader._metrics.dir) == mix.report()
    assert [r["windows"] for r in slot["sources"]["rows"]] == list(loader.windows_by_source().values())
    workers = [s for s in reader.slots() if s["role"] == metrics.ROLE_WORKER]
    assert len(workers) == num_workers and all(not any(r["windows"] for r in w["sources"]["rows"]) for w in workers)
    manifest = metrics.read_manifest(loader._metrics.dir, full=True)
    assert [(s["name"], s["windows_per_epoch"]) for s in manifest["mixture"]["sources"]] == list(zip(mix.names, mix.sizes))
    assert manifest["mixture"]["schedule"][1][0] == 20 and manifest["mixture"]["primary"] is None


def test_mixture_behind_a_background_prefetcher_publishes_the_loops_counts(three_sources):
    weights = {"web": 1, "code": 1, "math": 2}
    loader = streamtok.loader(three_sources, weights=weights, seq_len=50, batch_size=4, split="all", num_workers=1)
    pf = streamtok.CUDAPrefetcher(loader, device="cpu", background=True)
    it = iter(pf)
    for _ in range(25):
        next(it)
        time.sleep(0.002)  # the prefetch thread runs ahead of the loop
    it.close()
    state = pf.state_dict()["sampler"]
    reader = metrics.StatsReader(loader._metrics.dir)
    slots = {s["role"]: s for s in reader.slots()}
    loop, thread = slots[metrics.ROLE_CONSUMER], slots[metrics.ROLE_TRAINER]
    counts = [state["sources"][n]["windows"] for n in loader.collator.source.names]
    assert loop["batches"] == 25 and state["windows"] == 25 * 4
    assert _published(loop) == _reported(loader.collator.source.report_at(state["windows"], counts), 25, 100)
    assert metrics.source_report(loader._metrics.dir) == loader.collator.source.report_at(100, counts)
    assert thread["sources"]["windows"] > 100  # the thread's own count includes the batches in flight


def test_one_source_run_has_no_source_block(one_shard):
    loader = streamtok.loader(one_shard, seq_len=100, batch_size=4, split="all")
    sum(1 for _ in loader)
    reader = metrics.StatsReader(loader._metrics.dir)
    assert reader.n_sources == 0 and "sources" not in reader.slot(0)
    assert os.path.getsize(os.path.join(loader._metrics.dir, metrics.STATS)) == metrics.stats_words(2, 0) * 8
    assert "mixture" not in metrics.read_manifest(loader._metrics.dir, full=True)


@pytest.mark.parametrize(
    "mixture, problem",
    [
        ({"sources": []}, "non-empty 'sources'"),
        ({"sources": [{"name": "web", "windows_per_epoch": 0}]}, "windows_per_epoch"),
        ({"sources": [{"name": "a", "windows_per_epoch": 1}, {"name": "a", "windows_per_epoch": 2}]}, "repeat"),
        ({"sources": [{"name": "a", "windows_per_epoch": 1}], "primary": "b"}, "primary 'b'"),
        ({"sources": [{"name": "a", "windows_per_epoch": 1, "max_epochs": 0}]}, "max_epochs 0"),
        ({"sources": [{"name": "a", "windows_per_epoch": 1, "max_epochs": "2"}]}, "max_epochs '2'"),
    ],
)
def test_a_malformed_mixture_manifest_is_named(three_sources, mixture, problem):
    loader = streamtok.loader(three_sources, weights={"web": 1, "code": 1, "math": 1}, seq_len=50, batch_size=4, split="all")
    path = os.path.join(loader._metrics.dir, metrics.MANIFEST)
    with open(path) as f:
        m = json.load(f)
    write_json_atomic(path, {**m, "mixture": mixture})
    with pytest.raises(metrics.RunDirError, match=problem):
        metrics.read_manifest(loader._metrics.dir, full=True)


def test_mixture_resumed_with_another_batch_size_publishes_its_global_step(three_sources):
    weights = {"web": 0.5, "code": 0.3, "math": 0.2}
    first = streamtok.loader(three_sources, weights=weights, seq_len=50, batch_size=6, split="all")
    it = iter(first)
    for _ in range(7):
        next(it)
    it.close()
    second = streamtok.loader(three_sources, weights=weights, seq_len=50, batch_size=4, split="all")
    second.load_state_dict(first.state_dict())
    it = iter(second)
    for _ in range(5):
        next(it)
    it.close()
    mix = second.collator.source
    slot = metrics.StatsReader(second._metrics.dir).slot(0)
    assert slot["sources"]["step"] == mix.step == 12 and slot["sources"]["windows"] == 7 * 6 + 5 * 4
    assert _published(slot) == _reported(mix.report(), 12, 62)
