"""What repetition caps cost the mixture schedule per step, and what the code that carries them
costs a mixture without caps, paired against an older tree.

Times, per global step, the trainer's ``MixtureSampler.advance`` and a worker's
``iter_steps`` (the schedule plus the rows' starts, 64 steps a chunk) over ``steps`` steps.
Three sources, B = 32, world size 8 (256 windows a step), 1 Mi tokens each. Cases: no caps;
caps with ``math`` out (capped at 1 epoch, reached before the timed steps) and ``code``
capped but live. With ``--against TREE`` each round runs this file once in the other tree
(``PYTHONPATH=TREE``, caps cases skipped there) and once here, in turn, so that a noisy
neighbour hits both alike; the table gives medians and the ratio to the other tree. Usage::

    python benchmarks/bench_mixture_caps.py [--steps 2000] [--rounds 5] [--against /tmp/old-tree]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WEIGHTS = {"web": 0.5, "code": 0.3, "math": 0.2}
CAPS = {"math": 1, "code": 50}


def _time_case(readers, caps, steps: int) -> dict[str, float]:
    from streamtok.mixture.sampler import MixtureSampler

    kw = {"max_epochs": caps} if caps else {}
    s = MixtureSampler(readers, WEIGHTS, seq_len=1024, batch_size=32, world_size=8, rank=0, **kw)
    s.begin_pass()
    if caps:  # run until math is out, so the timed steps are on the renormalised schedule
        while s.counts[2] < s.limits[2]:
            s.advance()
    start = s.next_pass()
    t0 = time.perf_counter()
    for _ in range(steps):
        s.advance()
    t1 = time.perf_counter()
    it = s.iter_steps(start)
    for _ in range(steps):
        next(it)
    t2 = time.perf_counter()
    return {"advance": (t1 - t0) / steps * 1e6, "iter_steps": (t2 - t1) / steps * 1e6}


def _once(steps: int) -> dict[str, dict[str, float]]:
    """One round in this interpreter: µs per step of each case this tree can run."""
    from streamtok._formats import write_shard
    from streamtok.reader import MemmapReader

    with tempfile.TemporaryDirectory() as tmp:
        readers = {}
        for name in WEIGHTS:
            write_shard(Path(tmp) / f"{name}.bin", np.zeros(1 << 20, dtype=np.uint16))
            readers[name] = MemmapReader(Path(tmp) / f"{name}.bin")
        out = {"no caps": _time_case(readers, None, steps)}
        try:
            out["caps (one out, one live)"] = _time_case(readers, CAPS, steps)
        except TypeError:  # a tree without max_epochs
            pass
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--against", help="another streamtok tree to pair with (its PYTHONPATH)")
    p.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.once:
        print(json.dumps(_once(args.steps)))
        return
    trees = {"this": None} if not args.against else {"other": args.against, "this": None}
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            env = dict(os.environ)
            if tree:
                env["PYTHONPATH"] = tree
            cmd = [sys.executable, __file__, "--once", "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"µs per step, median of {args.rounds} rounds of {args.steps} steps (load average {os.getloadavg()[0]:.1f})")
    print("| tree | case | advance | iter_steps | advance vs other | iter_steps vs other |")
    print("|---|---|---:|---:|---:|---:|")
    for label in trees:
        for case in runs[label][0]:
            med = {k: statistics.median(r[case][k] for r in runs[label]) for k in ("advance", "iter_steps")}
            ratio = ["", ""]
            if "other" in runs and case in runs["other"][0] and label == "this":
                ratio = []
                for k in ("advance", "iter_steps"):
                    # Paired: the ratio of each round's pair, then the median.
                    ratio.append(f"{statistics.median(r[case][k] / o[case][k] for r, o in zip(runs['this'], runs['other'])):.2f}")
            print(f"| {label} | {case} | {med['advance']:.1f} | {med['iter_steps']:.1f} | {ratio[0]} | {ratio[1]} |")


if __name__ == "__main__":
    main()
