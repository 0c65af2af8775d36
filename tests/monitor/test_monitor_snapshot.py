"""The dashboard's layout at 80x24 and 120x40 (one source, and a 3-source mixture), ended, and
in ``--pid`` mode, with fixed data (pytest-textual-snapshot).

Regenerate after an intended layout change with ``pytest tests/test_monitor_snapshot.py
--snapshot-update`` and look at the SVG diff before committing it.
"""

import copy

from streamtok_monitor.app import MonitorApp

MiB = 1 << 20

FIXED = {
    "time": 1_700_000_000.0,
    "interval_s": 1.0,
    "sampling": {"interval_s": 1.0, "slow_interval_s": 5.0},
    "histories": {
        "wait": [0.03 + 0.002 * ((5 * i) % 11) for i in range(60)],
        "disk": [3 * MiB * ((3 * i) % 7) / 6 for i in range(60)],
        "hit": [0.96 + 0.002 * ((7 * i) % 13) for i in range(60)],
    },
    "run": {
        "dir": "/run/user/1000/streamtok/20240101-120000-4242-0", "pid": 4242, "alive": True, "status": "running",
        "mode": "shuffle", "seq_len": 1024, "batch_size": 32, "num_workers": 2, "rank": 0, "world_size": 1,
        "seed": 0, "epochs": 1, "steps_per_epoch": 12_000, "prefetch": {"depth": 2, "device": "cuda:0"},
        "epoch": 0, "step": 4_321, "progress": 4_321 / 12_000, "eta_s": 512.0,
    },
    "throughput": {
        "tokens": 141_590_528, "batches": 4_321, "tokens_per_s": 1_234_567.0, "batches_per_s": 37.7,
        "wait_fraction": 0.042,
        "history": [900_000.0 + 10_000.0 * ((7 * i) % 37) for i in range(60)],
        "workers": [
            {"worker_id": 0, "pid": 4250, "alive": True, "batches": 2161, "batches_per_s": 18.9, "tokens_per_s": 620_000.0},
            {"worker_id": 1, "pid": 4251, "alive": True, "batches": 2160, "batches_per_s": 18.8, "tokens_per_s": 615_000.0},
        ],
    },
    "memory": {
        "processes": [
            {"pid": 4242, "role": "trainer", "rss": 612 * MiB, "rss_anon": 402 * MiB, "rss_file": 210 * MiB, "rss_shmem": 0,
             "pss": 330 * MiB, "pss_anon": 250 * MiB, "pss_file": 80 * MiB, "uss": 120 * MiB, "minflt": 1, "majflt": 0,
             "cpu": 0.93},
            {"pid": 4250, "role": "worker 0", "rss": 340 * MiB, "rss_anon": 150 * MiB, "rss_file": 190 * MiB, "rss_shmem": 0,
             "pss": 160 * MiB, "pss_anon": 80 * MiB, "pss_file": 80 * MiB, "uss": 60 * MiB, "minflt": 1, "majflt": 0,
             "cpu": 0.41},
            {"pid": 4251, "role": "worker 1", "rss": 333 * MiB, "rss_anon": 150 * MiB, "rss_file": 183 * MiB, "rss_shmem": 0,
             "pss": 160 * MiB, "pss_anon": 80 * MiB, "pss_file": 80 * MiB, "uss": 58 * MiB, "minflt": 1, "majflt": 0,
             "cpu": 0.39},
        ],
        "rss_total": 1285 * MiB, "pss_total": 650 * MiB, "uss_total": 238 * MiB, "rss_anon_total": 702 * MiB,
        "rss_file_total": 583 * MiB, "mem_available": 20 << 30, "mem_total": 32 << 30,
        "pss_anon_total": 410 * MiB, "pss_file_total": 240 * MiB, "cpu_total": 1.73,
    },
    "page_cache": {
        "hit_ratio": 0.973, "disk_read_bytes": 3 * MiB, "disk_read_bytes_per_s": 3 * MiB, "page_bytes": 110 * MiB,
        "page_bytes_per_s": 110 * MiB, "read_amplification": 0.038, "page_floor": 3.0, "dataset_bytes": 6 * 190 * MiB,
        "resident_bytes": 3 * 190 * MiB + 95 * MiB, "evicted_bytes": 1200 * 4096, "recently_evicted_bytes": 30 * 4096,
        "method": "cachestat",
        "shards": [
            {"path": f"/data/edu_fineweb_train_{k:06d}.bin", "size": 190 * MiB, "cached": c, "fraction": c / (190 * MiB),
             "evicted_bytes": 200 * 4096, "recently_evicted_bytes": 5 * 4096, "method": "cachestat"}
            for k, c in enumerate([190 * MiB, 190 * MiB, 190 * MiB, 95 * MiB, 0, 0])
        ],
    },
}


def test_layout_80x24(snap_compare):
    assert snap_compare(MonitorApp(snapshot=copy.deepcopy(FIXED)), terminal_size=(80, 24))


def test_layout_120x40(snap_compare):
    assert snap_compare(MonitorApp(snapshot=copy.deepcopy(FIXED)), terminal_size=(120, 40))


def test_layout_ended_100x30(snap_compare):
    snap = copy.deepcopy(FIXED)
    snap["run"].update(alive=False, status="ended", eta_s=None)
    tp = snap["throughput"]
    tp.update(tokens_per_s=None, batches_per_s=None, wait_fraction=None)
    for w in tp["workers"]:
        w.update(alive=False, batches_per_s=None, tokens_per_s=None)
    snap["memory"].update({k: None for k in snap["memory"] if k.endswith("_total")}, processes=[], cpu_total=None)  # as Sampler._ended
    snap["page_cache"].update(hit_ratio=None, disk_read_bytes_per_s=None, read_amplification=None)
    assert snap_compare(MonitorApp(snapshot=snap), terminal_size=(100, 30))


def test_layout_pid_mode_80x24(snap_compare):
    snap = copy.deepcopy(FIXED)
    snap["run"] = {"dir": None, "pid": 4242, "alive": True, "status": "attached"}
    snap["throughput"] = None
    for p in snap["memory"]["processes"]:
        p["role"] = "process" if p["pid"] == 4242 else "child"
    snap["page_cache"].update(hit_ratio=None, read_amplification=None, page_floor=None, page_bytes=0)
    snap["histories"]["hit"] = []
    assert snap_compare(MonitorApp(snapshot=snap), terminal_size=(80, 24))


def _mixture(primary: str | None) -> dict:
    """FIXED as a 3-source mixture after 4,321 steps of 32 windows (hit ratio unknown: not replayed)."""
    snap = copy.deepcopy(FIXED)
    total = 4_321 * 32
    rows = [("fineweb-edu", 0.7, 0.7, 96_790, 490_000), ("code", 0.2, 0.2, 27_654, 25_000), ("openwebmath", 0.1, 0.1, 13_828, 3_000)]
    sources = [
        {"name": n, "windows": w, "tokens": w * 1024, "epoch": w // per_epoch, "share": w / total, "target": target, "weight": weight}
        for n, target, weight, w, per_epoch in rows
    ]
    sources[0]["target"] = 0.7 + 0.0001  # the schedule's integrated target, not the weight
    snap["run"].update(
        mixture={"primary": primary, "sources": sources}, step=4_321, eta_s=None, epochs=None if primary is None else 1,
        epoch=None if primary is None else 0, progress=None if primary is None else 0.1975,
    )
    snap["page_cache"].update(hit_ratio=None, page_floor=None, page_bytes=0)
    snap["histories"]["hit"] = []
    return snap


def test_layout_mixture_80x24(snap_compare):
    assert snap_compare(MonitorApp(snapshot=_mixture(None)), terminal_size=(80, 24))


def test_layout_mixture_120x40(snap_compare):
    assert snap_compare(MonitorApp(snapshot=_mixture("fineweb-edu")), terminal_size=(120, 40))
