"""The dashboard's two drawing widgets, built to repaint only what changed.

With a trainer running, every panel changes each second, but only a few of its rows do
(~15 of 120x40: rates, CPU shares, step, sparklines). Textual's own path for a widget that
returns its text from ``render()`` converts the whole text to strips (~0.1 ms a line on the
2-core VM), re-renders every row and composites the whole widget: ~10 ms of CPU a frame at
120x40, most of the monitor's 1.3-2% of a core. :class:`Panel` keeps a strip per line,
converts only the lines whose text or spans changed (~30 µs each) and marks only their rows
dirty, so Textual renders and composites nothing else; :class:`RateDigits` keeps its rows per
figure. A frame then costs ~5 ms (``benchmarks/RESULTS.md``, section 10).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Span, Text
from textual.content import Content
from textual.geometry import Region
from textual.reactive import reactive
from textual.strip import Strip
from textual.visual import Visual, visualize
from textual.widget import Widget
from textual.widgets import Digits


def split_lines(text: Text) -> list[tuple[str, tuple[Span, ...]]]:
    """The lines of ``text``, each its plain text and the spans on it (offsets in the line).

    What ``Content.from_rich_text(text).split("\\n")`` gives, without converting the
    styles of lines that did not change (a third of a panel's redraw before).
    """
    lines = text.plain.split("\n")
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    spans: list[list[Span]] = [[] for _ in lines]
    for start, end, style in text.spans:
        i = bisect_right(starts, start) - 1
        while i < len(lines) and starts[i] < end:
            a, b = max(start, starts[i]), min(end, starts[i] + len(lines[i]))
            if b > a:
                spans[i].append(Span(a - starts[i], b - starts[i], style))
            i += 1
    return [(line, tuple(on)) for line, on in zip(lines, spans)]


class RateDigits(Digits):
    """The big tokens/s figure at a fixed width (``monitor.tcss``): a new value repaints the
    widget and never re-lays out the screen (Textual's ``Digits.update`` does whenever the
    figure's width changes, e.g. 98.7 -> 105: a layout pass was most of a redraw's cost).

    Its rows are kept per figure shown: a steady rate shows a handful of figures over and
    over (three significant digits), and drawing one anew was a tenth of a frame's time.
    """

    KEEP = 64  # figures whose rows are kept (the set is emptied when full)

    def __init__(self, value: str = "", **kw: Any):
        super().__init__(value, **kw)
        self._rows: dict[tuple[Any, ...], list[Strip]] = {}

    def update(self, value: str) -> None:
        if value != self.value:
            self._value = value  # where Digits keeps its text (read by its render())
            self.refresh()

    def render_line(self, y: int) -> Strip:
        key = (self.value, self.size, self.visual_style, self.text_selection)
        rows = self._rows.get(key)
        if rows is None:
            if len(self._rows) >= self.KEEP:
                self._rows.clear()
            self._render_content()  # Textual's own drawing of the figure
            rows = self._rows[key] = self._render_cache.lines
        self._dirty_regions.clear()  # what _render_content clears: the rows kept are this figure's
        return rows[y] if y < len(rows) else Strip.blank(self.size.width, self.visual_style.rich_style)


class Panel(Widget):
    """A panel whose text is ``draw(snapshot, width, height)``; a new snapshot repaints only
    the rows whose text or style changed.

    The strips are what Textual makes of the same text (the widget's style under each span's,
    each segment tagged with its offset for mouse selection); a line wider than the panel,
    or a selection in progress, takes Textual's own conversion of the whole text.

    Args:
        draw: the panel's text for a snapshot, a content width and height.
    """

    DEFAULT_CSS = "Panel { height: auto; }"
    auto_links = reactive(False)  # no links in a panel's text

    def __init__(self, draw: Callable[[dict[str, Any], int, int], Text], **kw: Any):
        super().__init__(**kw)
        self.draw = draw
        self.text = Text("")
        self._lines: list[tuple[str, tuple[Span, ...]]] = []  # the text's lines, as last shown
        self._strips: list[Strip] = []  # the rows shown
        self._width = -1  # the content width the strips were made for (-1: make them all anew)
        self._style: tuple[Any, ...] | None = None  # the widget's style and theme they were made in
        # (span style, x, y) -> the rich style Textual gives it there (offsets for mouse selection)
        self._offset_styles: dict[tuple[Any, int, int], Any] = {}

    def render(self) -> Text:
        return self.text

    def render_line(self, y: int) -> Strip:
        """Row ``y`` of the kept strips (made again first if the width or the style changed:
        a resize or a new theme repaints the whole widget without a new snapshot)."""
        if self._width != self.size.width or self._style != (self.visual_style, self.app.ansi_theme):
            self._restrip(self.text)
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self.visual_style.rich_style)

    def _strip(self, line: Content, y: int) -> Strip:
        """Line ``y`` as Textual's ``Content.render_strips`` makes it (left-aligned, unwrapped)."""
        style, styles = self.visual_style, self._offset_styles
        if len(styles) > 4096:  # positions and styles seen recently: most rows reuse them
            styles.clear()
        out, x = [], 0
        for text, text_style in line.render(style, end="", parse_style=self._get_style):
            key = (text_style, x, y)
            rich = styles.get(key)
            if rich is None:
                rich = styles[key] = (style + text_style).rich_style_with_offset(x, y)
            out.append(Segment(text, rich))
            x += len(text)
        return Strip(out, line.cell_length)

    def _restrip(self, text: Text) -> list[int] | None:
        """Make the strips of ``text``, converting only lines that differ from the last text's
        at the same row; the rows that changed, or ``None`` when all were made anew."""
        width, style = self.size.width, (self.visual_style, self.app.ansi_theme)
        if style != self._style:
            self._offset_styles.clear()  # made under the old style
        lines = split_lines(text)
        if self.text_selection is not None or any(cell_len(plain) > width for plain, _ in lines):
            # Wrapped lines, or a selection (it spans lines): Textual's conversion of the whole text.
            self._strips = Visual.to_strips(self, visualize(self, text), width, None, self.visual_style)
            self._lines, self._width, self._style = [], width, style  # the next text: every line anew
            return None
        all_new = width != self._width or style != self._style
        old = [] if all_new else self._lines
        strips, changed = [], []
        for y, line in enumerate(lines):
            if y < len(old) and old[y] == line:
                strips.append(self._strips[y])
            else:
                plain, spans = line
                content = Content.from_rich_text(Text(plain, style=text.style, spans=list(spans)), self.app.console)
                strips.append(self._strip(content, y))
                changed.append(y)
        changed.extend(range(len(lines), len(self._strips)))  # rows the text no longer reaches
        self._lines, self._strips, self._width, self._style = lines, strips, width, style
        return None if all_new else changed

    def show(self, snap: dict[str, Any]) -> None:
        """Draw ``snap``; repaint the rows that changed (all of them after a resize)."""
        region = self.content_region
        text = self.draw(snap, max(20, region.width or 36), max(3, region.height or 9))
        if text == self.text and self._width == region.width:
            return
        self.text = text
        rows = self._restrip(text)
        if rows is None:
            self.refresh()
        elif rows:  # Textual renders and composites these rows and no others
            self.refresh(*(Region(0, y, region.width, 1) for y in rows if y < region.height))

    def selection_updated(self, selection: Any) -> None:
        self._width = -1  # made again with (or without) the selection's style
        self.refresh()

    def on_resize(self) -> None:
        snap = getattr(self.app, "snapshot", None)
        if snap is not None:
            self.show(snap)
