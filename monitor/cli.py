"""``streamtok-monitor``: watch a streamtok run (or any process) from another terminal.

    streamtok-monitor                 # list live runs, open the newest
    streamtok-monitor --run DIR       # one run directory
    streamtok-monitor --pid PID --files 'data/*.bin'   # any process, OS figures only
    streamtok-monitor --once --json   # one snapshot on stdout, for scripts and logs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime

from streamtok._help import ArgumentParser, RawDescriptionHelpFormatter
from streamtok.metrics import publish as metrics

from .runs import busiest, next_run, wait_for_run
from .watcher import Sampler

__all__ = ["busiest", "main"]


def _parser() -> argparse.ArgumentParser:
    # --help: the docstring's first line and its examples, without the backquotes.
    summary, examples = __doc__.replace("``", "").split("\n\n")[:2]
    p = ArgumentParser(prog="streamtok-monitor", description=summary.strip() + "\n\n" + examples.rstrip(),
                       formatter_class=RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="DIR", help="a run directory (default: the newest live run)")
    which.add_argument("--pid", type=int, help="attach to any process: memory, disk reads, residency of --files")
    p.add_argument("--files", metavar="GLOB", action="append", default=[], help="files whose page-cache residency to show (with --pid; repeatable)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="sampling period in seconds (default 1)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit (rates over --window)")
    p.add_argument("--window", type=float, default=0.25, metavar="S",
                   help="with --once: seconds the rates are measured over (default 0.25: the answer comes within "
                        "0.5 s; longer is steadier)")
    p.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON (implies --once)")
    p.add_argument("--list", action="store_true",
                   help=f"list the runs under the run directory and exit (this user's ended runs past the newest "
                        f"{metrics.KEEP_ENDED} are pruned; live and other users' or hosts' runs never are)")
    p.add_argument("--wait", action="store_true", help="wait for a run to start (start the monitor before training)")
    p.add_argument("--no-follow", dest="follow", action="store_false",
                   help="stay on the run shown when it ends (default: switch to the next live run)")
    return p


def _when(created: float) -> str:
    """A run's creation time as local date and time; ``?`` when it is no date (1e300, say)."""
    try:
        return datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?" * 19


def _print_runs(runs: list[metrics.RunInfo], out=sys.stderr) -> None:
    for r in runs:
        when = _when(r.created)
        state = "live " if r.alive else ("ended" if r.local else "other")  # other: another host's
        print(f"{state}  pid {r.pid:<8} {when}  {r.dir}", file=out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    for name in ("interval", "window"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            print(f"streamtok-monitor: --{name} must be a positive number of seconds, not {value}", file=sys.stderr)
            return 2
    try:
        return _main(args)
    except metrics.RunDirError as e:  # a run root that is a file, a malformed run: one line
        print(f"streamtok-monitor: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.list:
        root = metrics.run_root()
        if os.path.isdir(root):  # ended runs past the bound go, as when a run starts
            metrics.prune_runs(root)
        _print_runs(metrics.list_runs(), out=sys.stdout)
        return 0
    run_dir, pid = args.run, args.pid
    if run_dir is None and pid is None:
        live = [r for r in metrics.list_runs() if r.alive]
        if not live and args.wait:
            print(f"streamtok-monitor: waiting for a run under {metrics.run_root()} (Ctrl-C to stop)", file=sys.stderr)
            try:
                live = wait_for_run(args.interval)
            except KeyboardInterrupt:
                return 130
        if not live:
            print(
                f"streamtok-monitor: no live streamtok run under {metrics.run_root()}; start training "
                "(metrics are on by default) or pass --wait, --run DIR or --pid PID",
                file=sys.stderr,
            )
            return 2
        if not (args.once or args.json):
            _print_runs(live)
        run_dir = busiest(live).dir
    try:
        once = args.once or args.json
        sampler = Sampler(run_dir=run_dir, pid=pid, files=tuple(args.files), lazy_pages=once)
    except (OSError, ValueError) as e:  # RunDirError names the file and the key
        print(f"streamtok-monitor: cannot open {run_dir or pid}: {e}", file=sys.stderr)
        return 2
    if pid is not None and (pid <= 0 or not metrics.pid_alive(pid)):
        print(f"streamtok-monitor: no process {pid}", file=sys.stderr)
        return 2
    if args.once or args.json:
        sampler.sample(baseline=True)
        due = time.monotonic() + args.window
        if run_dir is not None:
            sampler.load_pages()  # its imports run within the window, not before it
        time.sleep(max(0.0, due - time.monotonic()))
        snap = sampler.sample(fresh=True)  # every figure of this moment (residency, PSS too)
        if args.json:
            json.dump(snap, sys.stdout, indent=1)
            print()
        else:
            from . import panels
            from .format import human_count

            tp = snap["throughput"]
            if tp:
                print(f"tokens/s {human_count(tp['tokens_per_s'])}")
            for text in (panels.throughput_detail(snap), panels.memory_panel(snap), panels.cache_panel(snap), panels.run_panel(snap)):
                print(text.plain, end="\n\n")
        return 0
    from .app import MonitorApp

    follow = (lambda current: next_run(current)) if args.follow and pid is None else None
    MonitorApp(sampler, interval_s=args.interval, follow=follow).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
