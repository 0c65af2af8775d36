"""The ``streamtok-monitor`` dashboard: four panels fed by a watcher thread.

The app holds no sampling logic: :class:`~streamtok_monitor.watcher.Watcher` posts a
:class:`~streamtok_monitor.messages.SnapshotReady` every interval and the app redraws the
panels from it (``panels.py`` turns a snapshot into text). Given ``snapshot`` and no
``sampler``, it shows that one snapshot (used by the layout snapshot test).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Digits, Footer, OptionList, Static
from textual.widgets.option_list import Option

from streamtok.metrics import publish as metrics

from . import panels
from .format import count_parts
from .messages import SampleFailed, SnapshotReady
from .watcher import Sampler, Watcher
from .widgets import Panel, RateDigits

HELP = """\
[b]streamtok-monitor[/b]   q quit · p pause/resume · r pick a run · ? this help

When the run shown ends and another starts, the monitor follows it (the title says so).

[b]Throughput[/b]  tokens/s the training loop received (decimal units; the line under it \
starts at zero and is labelled with its maximum and span). [i]waiting[/i] is the share of the \
loop's time spent inside next() on the loader, all of it (wall time less the loop's own work) (the x/y split included; on \
CUDAPrefetcher, when its thread iterates the loader): above ~10% the GPU waits for data, \
add workers. [i]thread wait[/i] marks a run that publishes only the prefetch thread's wait (older \
streamtok). Per-worker figures count B·T tokens per batch, as the trainer does.

[b]Memory[/b]  Σ anon is the anonymous PSS of the trainer and its workers: the memory the \
loader really holds. [cyan]mapped files[/cyan] is every mapped file page (shards and libraries), \
which the kernel can drop; with workers the trainer's are mostly libraries (torch), without \
them the shards too. CPU is % of one core; Σ CPU includes workers that ended in the interval.

[b]Page cache[/b]  shard hit = 1 - disk bytes read (/proc/PID/io of the process tree) / page \
bytes the reader touched; 100% when the shards stayed whole in the cache (the tree's reads \
are other files': disk-oth), ? other when other files' reads dominate. Under ~90% on a warm \
run, the dataset does not fit in free memory or is being evicted. amp = disk bytes per token byte delivered; [i]floor[/i] = the whole pages the \
windows span per byte used (2 KiB windows span ~1.5 pages: a cold random epoch cannot go \
below ~3x). amp well above the floor is readahead. Bytes in KiB/MiB/GiB.

[b]Run[/b]  position in the epoch and the time left at the current rate. A mixture shows its \
global step and per source the share of windows realised ([i]real[/i]) next to the share its \
weight schedule asked for so far ([i]target[/i]), its own epoch, and when wide its weight now \
and tokens; its pages are not replayed, so its hit ratio shows as -. Shard residency \
refreshes every 5 s, PSS (anon, file) every 10 s; the rest every interval (in the title).

Press any key to close."""


class HelpScreen(ModalScreen[None]):
    """Key bindings and how to read the panels."""

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")

    def on_key(self) -> None:
        self.dismiss()


class RunPicker(ModalScreen["str | None"]):
    """The runs under the run root, live first; Enter shows the one highlighted, Escape keeps."""

    BINDINGS = [Binding("escape", "dismiss_none", "keep")]

    def __init__(self, runs: list[metrics.RunInfo]):
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        options = [
            Option(f"{'live ' if r.alive else 'ended'}  pid {r.pid:<8} {os.path.basename(r.dir)}", id=r.dir)
            for r in self.runs
        ]
        yield OptionList(*options, id="runs") if options else Static("no runs under the run root", id="runs")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class MonitorApp(App[None]):
    """Live dashboard of one streamtok run (or of any process, with fewer panels).

    Args:
        sampler: where snapshots come from; sampled every ``interval_s`` on a thread.
        interval_s: sampling period.
        snapshot: a fixed snapshot to show instead (no sampler).
    """

    CSS_PATH = "monitor.tcss"
    TITLE = "streamtok-monitor"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("p", "toggle_pause", "pause"),
        Binding("r", "pick_run", "runs"),
        Binding("question_mark", "help", "help", key_display="?"),
    ]
    paused: reactive[bool] = reactive(False)

    def __init__(
        self, sampler: Sampler | None = None, *, interval_s: float = 1.0, snapshot: dict[str, Any] | None = None,
        follow: Callable[[str | None], Sampler | None] | None = None,
    ):
        super().__init__()
        self.sampler = sampler
        self.follow = follow
        self.interval_s = interval_s
        self.snapshot = snapshot
        self.watcher: Watcher | None = None
        self._panels: list[Panel] | None = None

    def compose(self) -> ComposeResult:
        yield Static("streamtok-monitor", id="title")
        with Horizontal(classes="row"):
            with Vertical(id="throughput", classes="panel"):
                with Horizontal(id="rate-row"):
                    yield RateDigits("0", id="tokens-rate")
                    yield Static("tokens/s", id="rate-unit")
                yield Panel(lambda snap, w, h: panels.history_line(snap, w), id="history")
                yield Panel(lambda snap, w, h: panels.throughput_detail(snap, w, rows=h), id="throughput-detail")
            yield Panel(lambda snap, w, h: panels.memory_panel(snap, w, rows=max(1, h - 5)), id="memory", classes="panel")
        with Horizontal(classes="row"):
            yield Panel(lambda snap, w, h: panels.cache_panel(snap, w, rows=max(1, h - 5)), id="cache", classes="panel")
            yield Panel(lambda snap, w, h: panels.run_panel(snap, w, rows=h), id="run", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        for panel_id, title in (("throughput", "Throughput"), ("memory", "Memory"), ("cache", "Page cache"), ("run", "Run")):
            self.query_one(f"#{panel_id}").border_title = title
        if self.snapshot is not None:
            self.call_after_refresh(self.show, self.snapshot)  # once panels have their size
        if self.sampler is not None:
            self.watcher = Watcher(
                self.sampler, lambda snap: self.post_message(SnapshotReady(snap)), self.interval_s,
                on_error=lambda e: self.post_message(SampleFailed(f"{type(e).__name__}: {e}")), follow=self.follow,
            )
            self.watcher.start()

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.join(timeout=5)

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self.snapshot = message.snapshot
        if not self.screen_stack:  # a snapshot posted while the app was closing
            return
        try:
            self.show(message.snapshot)
        except NoMatches:  # composed once and never removed: only while the app is closing
            return

    def on_sample_failed(self, message: SampleFailed) -> None:
        self.notify(message.error, title="sampling failed", severity="error")

    def show(self, snap: dict[str, Any]) -> None:
        """Redraw every panel from ``snap`` (on the dashboard, even under the help screen)."""
        main = self.screen_stack[0]
        tp = snap.get("throughput")
        if tp is not None:
            number, unit = count_parts(tp["tokens_per_s"])
            unit = f"{unit} tokens/s"
        else:  # --pid mode: the disk read rate is what is known
            disk = snap["page_cache"]["disk_read_bytes_per_s"]
            number, unit = ("-" if disk is None else f"{disk / (1 << 20):.1f}"), "MiB/s read from disk"
        digits = main.query_one("#tokens-rate", Digits)
        if digits.value != number:  # a changed width re-lays out the row: only when needed
            digits.update(number)
        label = main.query_one("#rate-unit", Static)
        if str(label.content) != unit:
            label.update(unit)
        if self._panels is None:  # composed once: the query (a CSS match per widget) once too
            self._panels = list(main.query(Panel))
        for panel in self._panels:
            panel.show(snap)
        self._title(snap)

    def _title(self, snap: dict[str, Any]) -> None:
        run = snap["run"]
        # The run's own name (its directory under the run root): a long root would wrap it away.
        where = os.path.basename(run["dir"].rstrip("/")) if run.get("dir") else f"pid {run['pid']}"
        state = "PAUSED" if self.paused else run["status"].upper()
        title = self.screen_stack[0].query_one("#title", Static)
        note = f"  ({snap['note']})" if snap.get("note") else ""
        text = f"streamtok-monitor [{state}] {where}  every {self.interval_s:g}s{note}"
        if getattr(title, "shown", None) != text:  # an update re-lays out the screen: only on a change
            title.shown = text  # type: ignore[attr-defined]
            title.update(Text(text, no_wrap=True, overflow="ellipsis"))  # Text: "[RUNNING]" is not markup
        title.set_class(run["status"] == "ended", "ended")

    def watch_paused(self, paused: bool) -> None:
        if self.watcher is not None:
            if paused:
                self.watcher.paused.set()
            else:
                self.watcher.paused.clear()
        if self.snapshot is not None:
            self._title(self.snapshot)

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_pick_run(self) -> None:
        if self.watcher is None or self.sampler is None or self.sampler.run_dir is None:
            self.notify("no run directory to pick from (--pid mode or a fixed snapshot)")
            return
        try:
            runs = sorted(metrics.list_runs(), key=lambda r: not r.alive)  # live first, newest first
        except metrics.RunDirError as e:
            self.notify(str(e), severity="error")
            return
        self.push_screen(RunPicker(runs), callback=self._switch_to)

    def _switch_to(self, run_dir: str | None) -> None:
        if run_dir is None or self.watcher is None:
            return
        try:
            sampler = Sampler(run_dir=run_dir)
        except (OSError, ValueError) as e:
            self.notify(str(e), title="cannot show that run", severity="error")
            return
        self.watcher.switch(sampler, f"picked {os.path.basename(run_dir)}")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def panel_text(self, panel_id: str) -> str:
        """The plain text a panel shows (for tests and scripts)."""
        main = self.screen_stack[0]
        if panel_id == "tokens-rate":
            return main.query_one("#tokens-rate", Digits).value
        widget = main.query_one(f"#{panel_id}")
        content = widget.text if isinstance(widget, Panel) else widget.content  # type: ignore[attr-defined]
        return content.plain if isinstance(content, Text) else str(content)
