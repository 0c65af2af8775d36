"""Re-take ``docs/monitor.svg`` (80x24) and ``docs/monitor-120x40.svg`` beside the demo's run.

    python docs/make_screenshot.py

Makes the demo's shards in ``data/shards`` first when they are not there (as ``examples/demo.py``
does), starts ``examples/train_gpt.py`` on the demo shards (2 workers) in a private run directory,
waits until it has trained a while, drives ``streamtok-monitor`` headless with Textual's
``run_test`` and saves what it shows, then stops the training run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SHOTS = (((80, 24), "monitor.svg"), ((120, 40), "monitor-120x40.svg"))


async def shoot(run_dir: str, size: tuple[int, int], out: str) -> None:
    from streamtok_monitor.app import MonitorApp
    from streamtok_monitor.watcher import Sampler

    app = MonitorApp(Sampler(run_dir=run_dir, slow_interval_s=2.0), interval_s=1.0)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(12.0)  # a dozen samples, so rates and the sparklines have data
        app.save_screenshot(filename=os.path.basename(out), path=os.path.dirname(out))


def main() -> None:
    from streamtok.metrics import publish as metrics

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import demo

    demo.tokenize_plays(demo.SHARDS)
    runs = tempfile.mkdtemp(prefix="streamtok-shot-")
    env = {**os.environ, "STREAMTOK_RUN_DIR": runs}
    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_gpt.py"), "--data", demo.SHARDS,
           "--out", os.path.join(runs, "ckpt"), "--steps", "100000", "--n-embd", "64", "--num-workers", "2",
           "--eval-every", "100000", "--ckpt-every", "100000"]  # no eval pause in the picture
    train = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        os.environ["STREAMTOK_RUN_DIR"] = runs
        deadline = time.monotonic() + 120
        while not [r for r in metrics.list_runs() if r.alive] and time.monotonic() < deadline:
            time.sleep(0.5)
        live = [r for r in metrics.list_runs() if r.alive]
        if not live:
            sys.exit("no live run appeared in 120 s: see the training script's output above")
        time.sleep(20)  # let it train a few dozen steps
        from streamtok_monitor.cli import busiest

        live = [r for r in metrics.list_runs() if r.alive]
        run_dir = busiest(live).dir
        for size, name in SHOTS:
            asyncio.run(shoot(run_dir, size, os.path.join(ROOT, "docs", name)))
    finally:
        train.kill()
        train.wait()


if __name__ == "__main__":
    main()
