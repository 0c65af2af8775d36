"""Formatters for the dashboard, plain functions of numbers (tested as such).

Units: bytes in binary units (KiB, MiB, GiB), counts and rates in decimal (K, M, G).
"""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_SPARKS = " ▁▂▃▄▅▆▇█"


def human_bytes(n: float | None) -> str:
    """``1536 -> '1.5KiB'``, binary units, at most 4 significant characters plus the unit."""
    if n is None:
        return "-"
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f}{unit}" if unit == "B" or abs(n) >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def spark(values: list[float], width: int, top: float | None = None) -> str:
    """The last ``width`` values as a one-line sparkline scaled from zero to ``top``.

    Starting at zero (not at the values' own minimum) keeps ±3% noise a flat line; ``top``
    defaults to the largest value shown. Empty cells pad the left edge.

    Args:
        values: the history, oldest first (negative values count as zero).
        width: cells.
        top: the value of a full cell; default the largest value shown.
    """
    if width <= 0:
        return ""
    shown = [max(0.0, float(v)) for v in values[-width:]]
    hi = top if top is not None else max(shown, default=0.0)
    cells = [_SPARKS[min(8, int(round(8 * v / hi)))] if hi > 0 else _SPARKS[0] for v in shown]
    return "".join(cells).rjust(width)


def human_count(n: float | None) -> str:
    """``1_234_567 -> '1.23M'``: decimal units for token and batch rates."""
    if n is None:
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 100 else f"{v:.1f}{unit}" if v >= 10 else f"{v:.2f}{unit}"
    return f"{n:.0f}" if abs(n) >= 10 or n == 0 else f"{n:.1f}"


def count_parts(n: float | None) -> tuple[str, str]:
    """:func:`human_count` as ``(number, unit)``: ``1_234_567 -> ('1.23', 'M')``."""
    text = human_count(n)
    if text[-1:] in "KMGT" and text != "-":
        return text[:-1], text[-1]
    return text, ""


def percent(x: float | None) -> str:
    """``0.1234 -> '12.3%'``; ``None -> '-'`` (nothing to divide yet)."""
    return "-" if x is None else f"{100 * x:.1f}%"


def duration(s: float | None) -> str:
    """Seconds as ``'45s'``, ``'3m05s'``, ``'2h07m'``; ``None`` or negative as ``'-'``."""
    if s is None or s < 0:
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar of ``width`` cells, eighths of a cell resolution."""
    if width <= 0:
        return ""
    f = 0.0 if fraction is None else min(1.0, max(0.0, fraction))
    eighths = int(round(f * width * 8))
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).ljust(width, "·")[:width]


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis in the middle."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    left = (width - 1) // 2
    return text[:left] + "…" + text[len(text) - (width - 1 - left) :]
