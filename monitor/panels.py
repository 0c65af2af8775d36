"""The text of each dashboard panel, as functions of a snapshot (no widgets, no I/O).

``width`` is the panel's content width; tables shrink their name column to fit 80 columns.
"""

from __future__ import annotations

import os
from typing import Any

from rich.text import Text

from .format import bar, duration, human_bytes, human_count, percent, shorten

Snapshot = dict[str, Any]


def throughput_detail(snap: Snapshot) -> Text:
    """Batches/s, the share of the training loop's time spent waiting for data, per-worker rates."""
    tp = snap.get("throughput")
    if not tp:
        return Text("no streamtok counters (--pid mode)", style="dim")
    t = Text()
    t.append("batches/s ", style="dim").append(human_count(tp["batches_per_s"]))
    wait = tp["wait_fraction"]
    # A run without a consumer slot behind a background prefetch thread publishes only that
    # thread's wait for the DataLoader, not the training loop's: say so.
    thread = tp.get("wait_source", "loop") == "prefetch_thread"
    t.append("  thread wait " if thread else "  waiting ", style="dim").append(percent(wait), style="bold red" if wait > 0.1 else "bold green")
    t.append("\ntotal ", style="dim").append(f"{human_count(tp['tokens'])} tok, {tp['batches']:,} batches")
    workers = tp["workers"]
    if workers:
        t.append("\n")
        for w in workers:
            t.append(f"w{w['worker_id']} ", style="dim" if w["alive"] else "dim strike")
            t.append(f"{human_count(w['batches_per_s'])}/s  ")
    return t


_MEMORY_COLUMNS = (("RSS", "rss"), ("anon", "rss_anon"), ("file", "rss_file"), ("PSS", "pss"))


def memory_panel(snap: Snapshot, width: int = 36) -> Text:
    """Per-process RSS split into anonymous and file-backed, PSS; totals; system memory.

    Narrower than 36 columns, the anon and then the file column are left out.
    """
    mem = snap["memory"]
    columns = list(_MEMORY_COLUMNS)
    while len(columns) > 2 and width < 12 + 6 * len(columns):
        columns.pop(1)
    name_w = max(8, width - 6 * len(columns))
    t = Text()
    t.append(f"{'process':<{name_w}}" + "".join(f"{label:>6}" for label, _ in columns) + "\n", style="bold")
    procs = mem["processes"]
    shown = procs[:4]
    for p in shown:
        t.append(f"{shorten(p['role'], name_w - 1):<{name_w}}")
        for label, key in columns:
            t.append(f"{human_bytes(p[key]):>6}", style="cyan" if label == "file" else "")
        t.append("\n")
    if len(procs) > len(shown):
        t.append(f"… {len(procs) - len(shown)} more\n", style="dim")
    t.append("Σ PSS ", style="dim").append(human_bytes(mem["pss_total"]), style="bold")
    t.append("  USS ", style="dim").append(human_bytes(mem["uss_total"]))
    t.append("  RSS ", style="dim").append(human_bytes(mem["rss_total"]))
    t.append("\navailable ", style="dim").append(f"{human_bytes(mem['mem_available'])} of {human_bytes(mem['mem_total'])}")
    t.append("\nfile RSS = page cache, droppable", style="cyan dim")
    return t


def cache_panel(snap: Snapshot, width: int = 36, rows: int = 4) -> Text:
    """Hit ratio, disk rate, read amplification, dataset residency and per-shard bars."""
    pc = snap["page_cache"]
    t = Text()
    hit = pc["hit_ratio"]
    t.append("hit ", style="dim").append(percent(hit), style="bold" if hit is None else ("bold green" if hit >= 0.9 else "bold red"))
    t.append("  disk ", style="dim").append(f"{human_bytes(pc['disk_read_bytes_per_s'])}/s")
    amp = pc["read_amplification"]
    t.append("  amp ", style="dim").append("-" if amp is None else f"{amp:.2f}")
    t.append("\nresident ", style="dim").append(f"{human_bytes(pc['resident_bytes'])} of {human_bytes(pc['dataset_bytes'])}")
    ev, rev = pc["evicted_pages"], pc["recently_evicted_pages"]
    if ev is not None:
        t.append("\nevicted ", style="dim").append(f"{ev:,} pages, {rev:,} recently", style="bold red" if rev else "")
    shards = pc["shards"]
    name_w = max(6, width - 20)
    for s in shards[:rows]:
        t.append(f"\n{shorten(os.path.basename(s['path']), name_w):<{name_w}} ")
        t.append(bar(s["fraction"], 12), style="green")
        t.append(f" {100 * s['fraction']:3.0f}%")
    if len(shards) > rows:
        low = sum(1 for s in shards[rows:] if s["fraction"] < 0.5)
        t.append(f"\n… {len(shards) - rows} more, {low} under half resident", style="dim")
    if not shards:
        t.append("\nno files (use --files GLOB)", style="dim")
    return t


def run_panel(snap: Snapshot, width: int = 36) -> Text:
    """Mode and shape of the run, its position in the epoch, ETA; or that it has ended."""
    run = snap["run"]
    t = Text()
    status = run["status"]
    style = {"running": "bold green", "idle": "bold yellow", "ended": "bold white on red"}[status]
    t.append(f" {status.upper()} ", style=style).append(f" pid {run['pid']}")
    if status == "ended":
        t.append("\ntrainer exited; last values kept", style="red")
    if "mode" not in run:
        t.append("\nnot a streamtok run: OS figures only", style="dim")
        return t
    t.append("\nmode ", style="dim").append(str(run["mode"]))
    t.append("  seq_len ", style="dim").append(str(run["seq_len"]))
    t.append("  B ", style="dim").append(str(run["batch_size"]))
    t.append("\nworkers ", style="dim").append(str(run["num_workers"]))
    t.append("  rank ", style="dim").append(f"{run['rank']}/{run['world_size']}")
    t.append("\nseed ", style="dim").append(str(run["seed"]))
    t.append("  epochs ", style="dim").append("∞" if run["epochs"] is None else str(run["epochs"]))
    pf = run.get("prefetch")
    if pf:
        t.append("  prefetch ", style="dim").append(f"{pf['depth']}@{pf['device']}")
    t.append("\nepoch ", style="dim").append(str(run["epoch"]))
    t.append("  step ", style="dim").append(f"{run['step']:,} / {run['steps_per_epoch']:,}")
    t.append("\n").append(bar(run["progress"], max(8, width - 20)), style="magenta")
    t.append(f" {percent(run['progress']):>6}").append("  ETA ", style="dim").append(duration(run["eta_s"]))
    return t
