"""The dashboard repaints only the rows whose text changed (issue 21, item 6: the monitor's
own CPU), and what it shows after such updates is what a fresh drawing shows."""

from __future__ import annotations

import asyncio
import copy

import pytest
from textual.visual import Visual, visualize

from streamtok_monitor.app import MonitorApp
from streamtok_monitor.widgets import Panel

from test_monitor_snapshot import FIXED, _mixture


def _next(snap: dict, k: int) -> dict:
    """``snap`` a second later: a few figures moved, as with a trainer running."""
    out = copy.deepcopy(snap)
    out["throughput"]["tokens_per_s"] = 1_234_567.0 + 40_000 * k
    out["throughput"]["batches"] += 38 * k
    out["throughput"]["history"] = out["throughput"]["history"][k:] + [1_000_000.0 + 5_000 * k] * k
    out["memory"]["processes"][1]["cpu"] = 0.41 + 0.05 * k
    out["run"]["step"] += 38 * k
    return out


def _rows(panel: Panel) -> list[list]:
    """The rows the panel gives Textual; a row below its text (a blank strip) as ``[]``."""
    rows = [[s for s in panel.render_line(y) if s.text] for y in range(panel.size.height)]
    return [[] if all(not s.text.strip() and not s.style.meta for s in row) else row for row in rows]


def _textual_rows(panel: Panel) -> list[list]:
    """The panel's text as Textual draws a widget that returns it from ``render()``."""
    strips = Visual.to_strips(panel, visualize(panel, panel.text), panel.size.width, None, panel.visual_style)
    rows = [[s for s in strip if s.text] for strip in strips[: panel.size.height]]
    return rows + [[]] * (panel.size.height - len(rows))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@pytest.mark.parametrize("snap", [FIXED, _mixture("fineweb-edu")], ids=["one source", "mixture"])
def test_rows_are_textual_s_own_drawing_of_the_text(snap, size):
    """Every row, styles and selection offsets included, after a series of partial updates."""

    async def scenario():
        app = MonitorApp(snapshot=copy.deepcopy(snap))
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            for k in range(1, 4):
                app.show(_next(snap, k))
                await pilot.pause()
            for panel in app.query(Panel):
                assert _rows(panel) == _textual_rows(panel), panel.id

    asyncio.run(scenario())


def test_a_changed_figure_repaints_its_row_only(monkeypatch):
    async def scenario():
        app = MonitorApp(snapshot=copy.deepcopy(FIXED))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            memory = app.query_one("#memory", Panel)
            repainted = []
            monkeypatch.setattr(memory, "refresh", lambda *regions, **kw: repainted.append(regions))
            snap = copy.deepcopy(FIXED)
            snap["memory"]["processes"][1]["cpu"] = 0.52  # worker 0: 41% -> 52%
            memory.show(snap)
            assert len(repainted) == 1 and len(repainted[0]) == 1, repainted  # one call, one region
            (region,) = repainted[0]
            assert (region.y, region.height) == (2, 1)  # the header, the trainer, then worker 0
            assert "52%" in memory.text.plain.split("\n")[2]
            repainted.clear()
            memory.show(snap)  # nothing changed: nothing repainted
            assert repainted == []

    asyncio.run(scenario())


def test_the_screen_after_updates_is_a_fresh_drawing_of_the_last_snapshot():
    """Rows kept from earlier snapshots and the digits kept per figure leave nothing stale."""
    snaps = [_next(FIXED, k) for k in (1, 2, 1, 3)]  # the rate figure returns to an earlier one

    async def screenshot(shown: list[dict]) -> str:
        app = MonitorApp(snapshot=copy.deepcopy(shown[0]))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            for snap in shown[1:]:
                app.show(snap)
                await pilot.pause()
            return app.export_screenshot()

    assert asyncio.run(screenshot([FIXED, *snaps])) == asyncio.run(screenshot(snaps[-1:]))


def test_wrapped_lines_and_a_new_theme_are_drawn_as_textual_draws_them():
    """A line wider than its panel wraps (Textual's own conversion of the whole text); a theme
    change repaints every row in the new colours without waiting for a snapshot."""
    snap = copy.deepcopy(FIXED)
    snap["throughput"]["network"] = {  # remote shards: long lines, wider than 80x24's panels
        "bytes_per_s": 12.5e6, "requests_per_s": 48.0, "in_flight": 3, "retries": 1,
        "cache_bytes": 1 << 30, "cache_hits": 1234, "wait_fraction": 0.02,
    }

    async def scenario():
        app = MonitorApp(snapshot=copy.deepcopy(FIXED))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.show(snap)
            await pilot.pause()
            detail = app.query_one("#throughput-detail", Panel)
            assert max(len(line) for line in detail.text.plain.split("\n")) > detail.size.width  # it wraps
            assert _rows(detail) == _textual_rows(detail)
            app.show(_next(snap, 1))
            await pilot.pause()
            before = {panel.id: _rows(panel) for panel in app.query(Panel)}
            app.theme = "textual-light" if app.theme != "textual-light" else "textual-dark"
            await pilot.pause()
            for panel in app.query(Panel):
                assert _rows(panel) == _textual_rows(panel), panel.id
                assert _rows(panel) != before[panel.id] or not panel.text.plain.strip(), panel.id

    asyncio.run(scenario())


def test_split_lines_is_textual_s_split_of_the_text():
    """Lines and their spans as Textual's own split gives them: spans across line ends, a
    base style, empty and trailing lines, overlapping spans."""
    from rich.text import Span, Text
    from textual.content import Content
    from textual.style import Style

    from streamtok_monitor.widgets import split_lines

    texts = [Text(""), Text("plain"), Text("a\n\nb\n"), Text("green\nbase", style="green")]
    t = Text("x")
    t.append("\nworker 0 ", style="dim").append("12/s", style="bold red").append("\n\nend\n", style="cyan")
    t.spans.append(Span(0, 12, "italic"))  # overlaps others, across a line end
    texts.append(t)
    base = Style.parse("white on black")
    for text in texts:
        lines = split_lines(text)
        expected = Content.from_rich_text(text).split("\n", allow_blank=True)
        assert [plain for plain, _ in lines] == [c.plain for c in expected], text
        for (plain, spans), want in zip(lines, expected):
            got = Content.from_rich_text(Text(plain, style=text.style, spans=list(spans)))
            assert list(got.render(base, end="")) == list(want.render(base, end="")), (text, plain)
