"""The text of each dashboard panel, as functions of a snapshot (no widgets, no I/O).

``width`` is the panel's content width; tables shrink their name column to fit 80 columns.
"""

from __future__ import annotations

import os
from typing import Any

from rich.text import Text

from .format import bar, duration, human_bytes, human_count, percent, shorten, spark

Snapshot = dict[str, Any]


def history_line(snap: Snapshot, width: int = 36) -> Text:
    """Tokens/s over the kept history, from zero, with its span and maximum labelled."""
    tp = snap.get("throughput")
    values = (tp or {}).get("history") or []
    dt = (snap.get("sampling") or {}).get("interval_s") or snap.get("interval_s") or 1.0
    label = f" 0-{human_count(max(values, default=0))}/s, {duration(len(values) * dt)}" if values else ""
    t = Text(spark(values, max(4, width - len(label))), style="green")
    return t.append(label, style="dim")


def _rate_line(t: Text, label: str, values: list[float], text: str, width: int, top: float | None = None, style: str = "") -> None:
    t.append(f"\n{label:<8}", style="dim").append(f"{text:>8} ", style=style)
    t.append(spark(values, max(4, width - 9 - max(8, len(label))), top), style="cyan")


def throughput_detail(snap: Snapshot, width: int = 36, rows: int = 4) -> Text:
    """Batches/s, the share of the training loop's time spent waiting for data, per-worker rates.

    With ``rows`` lines to spare, one line per worker (batches/s and tokens/s), else one line
    for all. ``--pid`` mode (no streamtok counters): what the OS shows instead, CPU and disk.
    """
    tp = snap.get("throughput")
    hist = snap.get("histories") or {}
    if not tp:
        mem, pc = snap["memory"], snap["page_cache"]
        t = Text("OS figures (no streamtok counters)", style="dim")
        cpu = mem.get("cpu_total")
        t.append("\nCPU ", style="dim").append("-" if cpu is None else f"{100 * cpu:.0f}% of a core")
        _rate_line(t, "disk", hist.get("disk", []), f"{human_bytes(pc['disk_read_bytes_per_s'])}/s", width)
        t.append("\nresident ", style="dim").append(f"{human_bytes(pc['resident_bytes'])} of {human_bytes(pc['dataset_bytes'])}")
        return t
    ended = snap["run"]["status"] == "ended"
    t = Text()
    t.append("batches/s ", style="dim").append(human_count(tp["batches_per_s"]))
    wait = tp["wait_fraction"]
    # A run without a consumer slot behind a background prefetch thread publishes only that
    # thread's wait for the DataLoader, not the training loop's: say so.
    thread = tp.get("wait_source", "loop") == "prefetch_thread"
    style = "bold" if wait is None else ("bold red" if wait > 0.1 else "bold green")
    waits = hist.get("wait", [])
    # Scaled to at least 10%, the level worth acting on: a 1% wait stays a flat line.
    _rate_line(t, "thread wait" if thread else "waiting", waits, percent(wait), width, top=max([0.1, *waits]), style=style)
    t.append("\ntotal ", style="dim").append(f"{human_count(tp['tokens'])} tok, {tp['batches']:,} batches")
    if ended:
        t.append(" (final)", style="dim")
    net = tp.get("network")
    if net:
        t.append(network_line(net), style="")
    workers = tp["workers"]
    if workers and rows >= 3 + len(workers) and width >= 44:
        for w in workers:
            t.append(f"\nworker {w['worker_id']:<3}", style="dim" if w["alive"] else "dim strike")
            t.append(f"{human_count(w['batches_per_s']):>6} batches/s {human_count(w['tokens_per_s']):>6} tok/s")
    elif workers:
        t.append("\n")
        for w in workers:
            t.append(f"w{w['worker_id']} ", style="dim" if w["alive"] else "dim strike")
            t.append(f"{human_count(w['batches_per_s'])}/s  ")
    return t


def network_line(net: dict[str, Any]) -> str:
    """Remote shards, in two short lines: the store's rates and the cache, and the loop's wait on the network."""
    line = (f"\nnetwork {human_bytes(net['bytes_per_s'])}/s {human_count(net['requests_per_s'])} req/s "
            f"{net['in_flight']} in flight {net['retries']} retries")
    cache = f"cache {human_bytes(net['cache_bytes'])} {human_count(net['cache_hits'])} hits " if net["cache_bytes"] else ""
    return line + f"\n{cache}on network {percent(net['wait_fraction'])} of the loop"


def memory_panel(snap: Snapshot, width: int = 36, rows: int = 4) -> Text:
    """Per process: CPU share, anonymous and file-backed PSS; Σ anon (what the loader holds),
    the shard page cache apart; system memory.

    Narrower than 36 columns the file column is left out.
    """
    mem = snap["memory"]
    columns = [("CPU", 5), ("anon", 8), ("file", 8)]
    if width < 36:
        columns.pop()
    name_w = max(8, width - sum(w for _, w in columns))
    t = Text()
    t.append(f"{'process':<{name_w}}" + "".join(f"{label:>{w}}" for label, w in columns) + "\n", style="bold")
    procs = mem["processes"]
    shown = procs[: max(1, rows)] if len(procs) > rows else procs
    if len(procs) > len(shown) and len(shown) > 1:
        shown = shown[:-1]  # room for the "more" line
    for p in shown:
        t.append(f"{shorten(p['role'], name_w - 1):<{name_w}}")
        cpu = p.get("cpu")
        t.append(f"{'-' if cpu is None else f'{100 * cpu:.0f}%':>5}")
        t.append(f"{human_bytes(p['pss_anon']):>8}")
        if len(columns) > 2:
            t.append(f"{human_bytes(p['pss_file']):>8}", style="cyan")
        t.append("\n")
    if len(procs) > len(shown):
        t.append(f"… {len(procs) - len(shown)} more\n", style="dim")
    if not procs:
        t.append("no processes (ended)\n", style="dim")
    t.append("Σ anon ", style="dim").append(human_bytes(mem.get("pss_anon_total")), style="bold")
    cpu = mem.get("cpu_total")
    t.append("  CPU ", style="dim").append("-" if cpu is None else f"{100 * cpu:.0f}%")
    # Σ file PSS: every file page the processes map (libraries too), not the shards' residency.
    t.append("\nmapped files ", style="dim").append(human_bytes(mem.get("pss_file_total")), style="cyan")
    t.append(" droppable", style="dim")
    t.append("\navailable ", style="dim").append(f"{human_bytes(mem['mem_available'])} of {human_bytes(mem['mem_total'])}")
    if any(p["role"] == "trainer" for p in shown) and rows >= len(shown) + (len(procs) > len(shown)):
        # Without workers the trainer maps the shards itself; with them, mostly libraries.
        workers = (snap.get("run") or {}).get("num_workers")
        hint = "trainer file: shards + libs" if workers == 0 else "trainer file: mostly libs (torch)"
        t.append(f"\n{hint}", style="dim")
    return t


def cache_panel(snap: Snapshot, width: int = 36, rows: int = 4) -> Text:
    """Hit ratio, disk rate, read amplification and its page floor, residency, per-shard bars."""
    pc = snap["page_cache"]
    hist = snap.get("histories") or {}
    t = Text()
    hit = pc["hit_ratio"]
    reads = pc.get("disk_reads_of", "shards")
    style = "bold" if hit is None else ("bold green" if hit >= 0.9 else "bold red")
    # Unknown when other files' reads dominate the tree's: "?", never a confident wrong number.
    shown = "? other" if hit is None and reads == "others" else percent(hit)
    t.append(f"{'shard hit':<9}", style="dim").append(f"{shown:>7} ", style="bold yellow" if shown == "? other" else style)
    t.append(spark(hist.get("hit", []), max(4, width - 17), 1.0), style="cyan")
    # The tree's disk reads; "other" when the shards were whole in the cache (none is theirs).
    label = "disk" if reads != "none" or not pc["disk_read_bytes_per_s"] else "disk-oth"
    _rate_line(t, label, hist.get("disk", []), f"{human_bytes(pc['disk_read_bytes_per_s'])}/s", width)
    amp, floor = pc["read_amplification"], pc.get("page_floor")
    t.append("\namp ", style="dim").append("-" if amp is None else f"{amp:.2f}")
    t.append("  page floor ", style="dim").append("-" if floor is None else f"{floor:.2f}")
    resident = f"{human_bytes(pc['resident_bytes'])}/{human_bytes(pc['dataset_bytes'])}"
    t.append("\nshards cached ", style="dim").append(resident)
    ev, rev = pc.get("evicted_bytes"), pc.get("recently_evicted_bytes")
    if ev is not None:
        t.append("\n" if len(resident) + 26 > width else "  ")
        t.append("evicted ", style="dim").append(human_bytes(ev), style="bold red" if rev else "")
    shards = pc["shards"]
    name_w = max(6, width - 20)
    if ev is not None and len(resident) + 26 > width:
        rows -= 1  # the evicted figure took a line of its own
    if len(shards) > rows:
        rows = max(0, rows - 1)  # room for the "more" line
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


def run_panel(snap: Snapshot, width: int = 36, rows: int = 9) -> Text:
    """Mode and shape of the run, its position in the epoch, ETA; or that it has ended.

    A mixture shows its global step (and its primary source's epoch) and, in the ``rows``
    left, one line per source (see :func:`mixture_lines`).
    """
    run = snap["run"]
    t = Text()
    status = run["status"]
    style = {"running": "bold green", "idle": "bold yellow", "attached": "bold cyan", "ended": "bold white on red"}[status]
    t.append(f" {status.upper()} ", style=style).append(f" pid {run['pid']}")
    if status == "ended":
        t.append("\nexited; final counters, no rates", style="red")
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
    mix = run.get("mixture")
    if mix:
        step = run["step"]
        t.append("\nstep ", style="dim").append("-" if step is None else f"{step:,}")
        if mix["primary"] is None:
            t.append("  stream", style="dim")
        else:
            epoch = "-" if run["epoch"] is None else str(run["epoch"])
            t.append(f"  {shorten(mix['primary'], 12)} epoch ", style="dim").append(epoch)
            t.append(f" {percent(run['progress'])}")
        used = t.plain.count("\n") + 1
        return t.append_text(mixture_lines(mix["sources"], width, rows - used))
    t.append("\nepoch ", style="dim").append(str(run["epoch"]))
    bound = "" if run.get("steps_exact", True) else "≤"  # packed rows: an epoch's steps are only bounded
    t.append("  step ", style="dim").append(f"{run['step']:,} / {bound}{run['steps_per_epoch']:,}")
    t.append("\n").append(bar(run["progress"], max(8, width - 20)), style="magenta")
    t.append(f" {percent(run['progress']):>6}").append("  ETA ", style="dim").append(duration(run["eta_s"]))
    return t


def mixture_lines(sources: list[dict[str, Any]], width: int = 36, rows: int = 4) -> Text:
    """A header and one line per mixture source: the share of windows realised, the share the
    schedule asked for so far (its weights integrated), the source's epoch (over its cap,
    ``1/2``, when ``max_epochs`` caps it); wider, its weight now and its tokens. Unknown figures show as ``-``. Fewer ``rows`` than sources: the
    first ones and how many more."""
    columns = [("real", 7), ("target", 7), ("epoch", 6)]
    if width >= 50:
        columns.append(("now", 7))
    if width >= 56:
        columns.append(("tokens", 8))
    name_w = max(6, width - sum(w for _, w in columns))
    t = Text()
    if rows < 2:
        return t.append(f"\n{len(sources)} sources (no room)", style="dim") if rows == 1 else t
    t.append("\n" + f"{'source':<{name_w}}" + "".join(f"{label:>{w}}" for label, w in columns), style="bold")
    shown = sources if len(sources) <= rows - 1 else sources[: max(0, rows - 2)]
    for s in shown:
        t.append(f"\n{shorten(s['name'], name_w - 1):<{name_w}}")
        t.append(f"{percent(s['share']):>7}", style="bold")
        t.append(f"{percent(s['target']):>7}")
        cap = s.get("max_epochs")
        epoch = "-" if s["epoch"] is None else str(s["epoch"])
        t.append(f"{epoch if cap is None else f'{epoch}/{cap:g}':>6}")
        if len(columns) > 3:
            t.append(f"{percent(s['weight']):>7}", style="dim")
        if len(columns) > 4:
            t.append(f"{human_count(s['tokens']):>8}")
    if len(shown) < len(sources):
        t.append(f"\n… {len(sources) - len(shown)} more", style="dim")
    return t
