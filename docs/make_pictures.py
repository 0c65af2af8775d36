"""Regenerate the README's pictures and its bench table: the loaders' tokens/s and the monitor's screenshots.

    python docs/make_pictures.py              # all: rerun the bench (~3 min), draw, table, re-take the monitor
    python docs/make_pictures.py --no-bench   # draw docs/bench.png from the saved docs/bench.json only

1. ``streamtok bench --json`` with the contestants of ``TABLE`` (cold cache included) ->
   ``docs/bench.json``, with the time it was measured (``measured_utc``).
2. ``docs/bench.png``: the median tokens/s of ``CONTESTANTS`` (the loaders a user would pick
   instead of streamtok, and streamtok's common settings) as horizontal bars, streamtok's in
   blue, each labelled with its ratio to nanoGPT's ``get_batch``; machine and settings in the title.
3. README.md's bench table (the lines from ``| contestant |`` on) rewritten from the same JSON
   with ``streamtok.bench.table`` (not with ``--no-bench``): the chart and the table are then one
   run's numbers.
4. ``docs/make_screenshot.py``: ``docs/monitor.svg`` and ``docs/monitor-120x40.svg`` beside a
   demo run (making the demo's ``data/shards`` first when they are not there).

Needs matplotlib (in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
CONTESTANTS = [
    "nanogpt", "mapstyle:workers=0", "mapstyle:workers=2", "floor",
    "streamtok:mode=shuffle,workers=0", "streamtok:mode=shuffle,workers=0,out=compact",
    "streamtok:mode=shuffle,workers=2", "streamtok:mode=shuffle,workers=2,out=prefetch",
]
# The README table's rows, in its order: the chart's and the other modes and worker counts.
TABLE = [
    "nanogpt", "floor", "mapstyle:workers=0", "mapstyle:workers=2",
    "streamtok:mode=shuffle,workers=0", "streamtok:mode=shuffle,workers=0,out=compact",
    "streamtok:mode=random,workers=0", "streamtok:mode=random,workers=0,out=compact",
    "streamtok:mode=sequential,workers=0", "streamtok:mode=shuffle,workers=1", "streamtok:mode=shuffle,workers=2",
    "streamtok:mode=shuffle,workers=2,out=compact", "streamtok:mode=shuffle,workers=2,out=prefetch",
    "streamtok:mode=random,workers=2",
]
README = os.path.join(ROOT, "README.md")
LABELS = {
    "nanogpt": "nanoGPT get_batch",
    "mapstyle:workers=0": "map-style Dataset + DataLoader",
    "mapstyle:workers=2": "map-style Dataset + DataLoader, 2 workers",
    "floor": "one numpy gather (the floor)",
    "streamtok:mode=shuffle,workers=0": "streamtok (x, y)",
    "streamtok:mode=shuffle,workers=0,out=compact": "streamtok, uint16 to the GPU",
    "streamtok:mode=shuffle,workers=2": "streamtok (x, y), 2 workers",
    "streamtok:mode=shuffle,workers=2,out=prefetch": "streamtok + CUDAPrefetcher, 2 workers",
}


def run_bench(out: str) -> None:
    """``streamtok bench --json`` over TABLE, saved to ``out`` with its start time (written whole, then renamed)."""
    cmd = [sys.executable, "-m", "streamtok.cli", "bench", "--json"]
    cmd += [a for c in TABLE for a in ("--contestant", c)]
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)  # whole, or fail
    report["measured_utc"] = started
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    os.replace(out + ".tmp", out)


def table_rows(report: dict) -> list[dict]:
    """The report's results in the README table's order (TABLE; contestants not in it last)."""
    order = {name: k for k, name in enumerate(TABLE)}
    return sorted(report["results"], key=lambda r: order.get(r["name"], len(TABLE)))


def readme_table(report: dict) -> str:
    """The README's bench table for ``report``: ``streamtok.bench.table`` of its rows."""
    from streamtok.bench import table

    return table(table_rows(report))


def update_readme(report: dict, readme: str = README) -> None:
    """Replace README.md's bench table (the ``| contestant |`` line and the rows under it) with ``report``'s."""
    with open(readme) as f:
        lines = f.read().split("\n")
    (start,) = [k for k, line in enumerate(lines) if line.startswith("| contestant | Mtok/s (median) |")]
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[start:end] = readme_table(report).split("\n")
    with open(readme + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(readme + ".tmp", readme)


def draw(report: dict, out: str) -> None:
    """The tokens/s bar chart of a ``streamtok bench --json`` report, as a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {r["name"]: r for r in report["results"] if "error" not in r}
    results = [by_name[name] for name in CONTESTANTS if name in by_name]
    base = next((r["tokens_per_s"] for r in results if r["name"] == "nanogpt"), None)
    names = [LABELS.get(r["name"], r["name"]) for r in results]
    rates = [r["tokens_per_s"] / 1e6 for r in results]
    colors = ["#1f77b4" if r["name"].startswith("streamtok") else "#9a9a9a" for r in results]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(results) + 1.3), dpi=100)
    y = range(len(results))[::-1]
    ax.barh(list(y), rates, color=colors)
    ax.set_yticks(list(y), names, fontsize=9)
    for yi, rate in zip(y, rates):
        ratio = f"  {rate:.0f}M" + (f" ({rate * 1e6 / base:.1f}x nanoGPT)" if base else "")
        ax.text(rate, yi, ratio, va="center", fontsize=8)
    ax.set_xlim(0, max(rates) * 1.35)
    ax.set_xlabel("tokens/s, millions (median of runs; higher is better)")
    m, s = report["machine"], report["settings"]
    ax.set_title(f"Loaders on the same 1 GiB of shards, B={s['batch_size']}, T={s['seq_len']}\n"
                 f"{m['cores']}-core {m['cpu']}, torch {m['torch']} (streamtok bench)", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(out + ".tmp.png")
    plt.close(fig)
    os.replace(out + ".tmp.png", out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-bench", action="store_true", help="draw from the saved JSON; do not rerun the bench")
    p.add_argument("--no-screenshot", action="store_true", help="do not re-take the monitor's screenshots")
    p.add_argument("--json", default=os.path.join(DOCS, "bench.json"), help="the bench report (default docs/bench.json)")
    p.add_argument("--out", default=os.path.join(DOCS, "bench.png"), help="the chart (default docs/bench.png)")
    args = p.parse_args(argv)
    if not args.no_bench:
        run_bench(args.json)
    with open(args.json) as f:
        report = json.load(f)
    draw(report, args.out)
    print(f"wrote {args.out}")
    if not args.no_bench:  # a new run: the table shows it too (--no-bench leaves README.md alone)
        update_readme(report)
        print(f"wrote README.md's bench table (measured {report['measured_utc']} UTC): update the date and ratios under it")
    if not args.no_screenshot:
        sys.path.insert(0, DOCS)
        import make_screenshot

        make_screenshot.main()
        print("wrote docs/monitor.svg and docs/monitor-120x40.svg")


if __name__ == "__main__":
    main()
