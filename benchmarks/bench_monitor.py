"""Cost of leaving ``streamtok-monitor`` open: its CPU and memory, and the trainer's speed with it.

    python benchmarks/bench_monitor.py [--gib 1.0] [--workers 0 2] [--seconds 12] [--interval 1] [--draw 60]

Builds ``--gib`` GiB of llm.c uint16 shards (sparse files: all-zero tokens, no disk writes;
the reader maps and touches them like any other) in a temporary directory and reads them once (warm page cache). Per worker count:

1. the trainer alone (before and after 2., averaged): a flat-out loop (B=32, T=1024, shuffle, endless, no model) counts its
   own tokens per second after a 2 s warm-up;
2. the same with the full-screen monitor attached to its run (``streamtok-monitor --run DIR``
   on a 120x40 pseudo-terminal, every ``--interval`` s): the monitor's CPU time over the
   measured window (its start-up excluded: from 2 s after its first snapshot is on the
   terminal, never earlier than 3 s after its start) as % of one core, its peak RSS, and the trainer's
   tokens per second over that same window (from marks it takes every 0.25 s).

With ``--draw FRAMES``, the drawing alone (``draw_cost``): snapshots of a running trainer
replayed into the app on the same pseudo-terminal, CPU per frame, sampling excluded.

Also the wall time of ``streamtok-monitor --once --json`` with its defaults (start-up, two
samples over the default 0.25 s ``--window``, the slow probes run fresh for the second),
measured while the trainer runs, and of importing the monitor. The monitor competes with the trainer
for the same cores: on a shared 2-core machine the with/without ratio is within noise unless
the monitor costs more than a few % of a core. The monitor's CPU and the ``--once`` time are
measured while the trainer runs flat out (on the VM of ``RESULTS.md``, a 2-core machine
shared with other agents' jobs: the load average is printed).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

import psutil

HEADER = 256  # int32 words of an llm.c shard header
TRAINER = """
import json, sys, time
import streamtok
data, workers, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
loader = streamtok.loader(data, seq_len=1024, batch_size=32, split="all", num_workers=workers, epochs=None)
print(loader._metrics.dir, flush=True)
it = iter(loader)
next(it)
start = time.monotonic()
marks, n, due = [], 0, start + 2.0
while True:
    next(it)
    n += 1
    now = time.monotonic()
    if now >= due:  # (wall clock, batches so far) every 0.25 s after a 2 s warm-up
        marks.append((time.time(), n))
        due = now + 0.25
    if now >= start + secs:
        break
print(json.dumps(marks), flush=True)
"""


def make_shards(directory: str, gib: float, n_shards: int = 8) -> list[str]:
    """Sparse llm.c uint16 shards totalling ``gib`` GiB."""
    import numpy as np

    os.makedirs(directory, exist_ok=True)
    n_tokens = int(gib * (1 << 30)) // 2 // n_shards
    paths = []
    for k in range(n_shards):
        path = os.path.join(directory, f"bench_train_{k:06d}.bin")
        header = np.zeros(HEADER, dtype=np.int32)
        header[:3] = (20240520, 1, n_tokens)
        with open(path, "wb") as f:
            f.write(header.tobytes())
            f.truncate(HEADER * 4 + 2 * n_tokens)
        paths.append(path)
    return paths


def warm(paths: list[str]) -> None:
    """Read every shard once, so that no measurement pays the first touch of the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def _monitor_cmd() -> list[str]:
    return [sys.executable, "-m", "streamtok_monitor.cli"]


def _start_trainer(data: str, workers: int, seconds: float, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", TRAINER, data, str(workers), str(seconds)],
                            stdout=subprocess.PIPE, text=True, env=env)
    run_dir = proc.stdout.readline().strip()  # type: ignore[union-attr]
    return proc, run_dir


def _finish_trainer(proc: subprocess.Popen, window: tuple[float, float] | None = None) -> float:
    """The trainer's tokens/s over its marks (within ``window``, wall-clock times, if given)."""
    out, _ = proc.communicate(timeout=600)
    marks = json.loads(out.strip().splitlines()[-1])
    if window is not None:
        marks = [m for m in marks if window[0] <= m[0] <= window[1]]
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return (n1 - n0) * 32 * 1024 / (t1 - t0)


def _watch_monitor(run_dir: str, seconds: float, interval: float, env: dict[str, str]) -> dict[str, float]:
    """Run the full-screen monitor on a pty for ``seconds``; its CPU share and peak RSS."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    mon = subprocess.Popen(_monitor_cmd() + ["--run", run_dir, "--interval", str(interval)],
                           stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"}, close_fds=True)
    os.close(slave)
    stop, drawn = threading.Event(), threading.Event()

    def drain() -> None:  # the terminal must be read, or the app blocks on a full pty
        tail = b""
        while not stop.is_set():
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            tail = (tail + chunk)[-4096:]
            if b"RUNNING" in tail:  # the title once the first snapshot is drawn
                drawn.set()

    threading.Thread(target=drain, daemon=True).start()
    p = psutil.Process(mon.pid)
    # Start-up excluded: imports and the first drawing (seconds on a loaded machine), then the
    # first samples (the slow probes' first round, the page replay's set-up).
    started = time.monotonic()
    drawn.wait(timeout=60)
    time.sleep(max(2.0, min(3.0, seconds / 3) - (time.monotonic() - started)))
    c0, t0, wall0, peak = sum(p.cpu_times()[:2]), time.monotonic(), time.time(), 0
    end = t0 + seconds - min(3.0, seconds / 3)
    while time.monotonic() < end:
        peak = max(peak, p.memory_info().rss)
        time.sleep(0.25)
    cpu = (sum(p.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
    wall1 = time.time()
    mon.kill()
    mon.wait()
    stop.set()
    os.close(master)
    return {"cpu_pct": 100 * cpu, "rss_mib": peak / (1 << 20), "window": (wall0, wall1)}


REPLAY = """
import json, sys, time
from streamtok_monitor.app import MonitorApp
snaps, frames, out = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
app, shown, marks = MonitorApp(interval_s=1.0), [0], {}
def tick():
    i = shown[0]
    shown[0] += 1
    if i == 10:  # the first frames (the whole screen drawn) excluded
        marks["c0"] = time.process_time()
    if i == 10 + frames:
        open(out, "w").write(str(1000 * (time.process_time() - marks["c0"]) / frames))
        app.exit()
        return
    app.snapshot = snaps[i % len(snaps)]
    app.show(app.snapshot)
mount = MonitorApp.on_mount
def on_mount(self):
    mount(self)
    self.set_interval(0.05, tick)
MonitorApp.on_mount = on_mount
app.run()
"""


def draw_cost(run_dir: str, frames: int, env: dict[str, str], tmp: str) -> float:
    """The drawing alone: ``frames`` snapshots of the run (0.5 s apart, by this process's
    sampler) shown again in the full-screen app on a 120x40 pty, 20 a second (one frame
    each); its CPU milliseconds per frame (sampling excluded)."""
    from streamtok_monitor.watcher import Sampler

    sampler, snaps = Sampler(run_dir=run_dir), []
    for _ in range(frames + 1):
        snaps.append(sampler.sample())
        time.sleep(0.5)
    path, out = os.path.join(tmp, "snaps.json"), os.path.join(tmp, "draw.txt")
    with open(path, "w") as f:
        json.dump(snaps[1:], f)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    app = subprocess.Popen([sys.executable, "-c", REPLAY, path, str(2 * frames), out], stdin=slave, stdout=slave,
                           stderr=slave, env={**env, "TERM": "xterm-256color"}, close_fds=True)
    os.close(slave)

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            return

    threading.Thread(target=drain, daemon=True).start()
    app.wait(timeout=600)
    os.close(master)
    with open(out) as f:
        return float(f.read())


def once_wall(run_dir: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(_monitor_cmd() + ["--run", run_dir, "--once", "--json"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def import_wall(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import streamtok_monitor.app, streamtok_monitor.cli"], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--draw", type=int, default=0, metavar="FRAMES",
                    help="also the drawing alone: FRAMES snapshots of each run replayed into the app (CPU ms/frame)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        data = os.path.join(tmp, "data")
        paths = make_shards(data, args.gib)
        warm(paths)
        size = sum(os.path.getsize(p) for p in paths)
        env = {**os.environ, "STREAMTOK_RUN_DIR": os.path.join(tmp, "runs")}
        env.pop("STREAMTOK_METRICS", None)
        # On a shared machine (the 2-core VM these figures come from is loaded by other
        # agents' jobs) the load average says how much the rates below were competed for.
        print(f"data: {len(paths)} shards, {size / (1 << 30):.2f} GiB; {os.cpu_count()} CPUs; interval {args.interval} s; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"import monitor: {import_wall(env):.2f} s")
        print("| workers | trainer alone (tok/s) | with monitor (tok/s) | ratio | monitor CPU (% of a core) | monitor peak RSS (MiB) | --once (s) |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        drawn: dict[int, float] = {}
        for workers in args.workers:
            # Alone before and after the monitored run, so that drift of a shared machine
            # hits both sides alike.
            proc, _ = _start_trainer(data, workers, args.seconds, env)
            before = _finish_trainer(proc)
            proc, run_dir = _start_trainer(data, workers, args.seconds + 15, env)  # outlasts a slow start-up
            time.sleep(1.0)
            mon = _watch_monitor(run_dir, args.seconds, args.interval, env)
            once = once_wall(run_dir, env)
            watched = _finish_trainer(proc, mon["window"])  # while the monitor ran, start-up excluded
            proc, _ = _start_trainer(data, workers, args.seconds, env)
            alone = (before + _finish_trainer(proc)) / 2
            print(f"| {workers} | {alone / 1e6:.0f}M | {watched / 1e6:.0f}M | {watched / alone:.2f} | "
                  f"{mon['cpu_pct']:.2f} | {mon['rss_mib']:.0f} | {once:.2f} |", flush=True)
            if args.draw:
                proc, run_dir = _start_trainer(data, workers, args.draw * 0.5 + 5, env)
                time.sleep(1.0)
                drawn[workers] = draw_cost(run_dir, args.draw, env, tmp)
                proc.kill()
                proc.wait()
        for workers, ms in drawn.items():
            print(f"drawing alone, {workers} workers: {ms:.2f} ms of CPU per frame ({args.draw} snapshots replayed twice)")
        print(f"load average at the end {os.getloadavg()[0]:.1f} (monitor CPU and --once are measured while the trainer runs)")


if __name__ == "__main__":
    main()
