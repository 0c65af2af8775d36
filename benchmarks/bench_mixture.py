"""The mixture schedule's cost per step does not grow with the step number or the steps since a weight change.

Times ``MixtureSampler.advance`` (the trainer's per-step schedule work; each worker does the
same per step) over ``steps`` steps from four positions, interleaved for ``rounds`` rounds
so that a noisy neighbour hits all alike: step 0; step 10^9 with the weights unchanged since
step 0; step 10^9 one step after a weight change; step 10^9 with a 4-phase schedule behind it.
Three sources, B = 32, world size 8 (256 windows a step). Usage::

    python benchmarks/bench_mixture.py [--steps 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from streamtok._formats import write_shard
from streamtok.mixture.sampler import MixtureSampler
from streamtok.reader import MemmapReader

FAR = 10**9
WEIGHTS = {"web": 0.7, "code": 0.2, "math": 0.1}
SCHEDULE = [(0, WEIGHTS), (FAR // 4, {"web": 0.5, "code": 0.3, "math": 0.2}),
            (FAR // 2, {"web": 0.4, "code": 0.4, "math": 0.2}), (FAR - 1, {"web": 0.2, "code": 0.3, "math": 0.5})]


def _sampler(readers: dict[str, MemmapReader], weights, step: int) -> MixtureSampler:
    """A sampler positioned at ``step`` through a saved state (as a resume would be)."""
    s = MixtureSampler(readers, weights, seq_len=1024, batch_size=32, world_size=8, rank=0)
    if step:
        state = s.state_dict()
        windows = step * s.step_samples
        state["step"], state["windows"] = step, windows
        for name, w in WEIGHTS.items():
            state["sources"][name]["windows"] = round(w * windows)
        state["anchor"] = {"step": step, "windows": windows, "targets": {n: w * windows for n, w in WEIGHTS.items()}}
        s.load_state_dict(state)
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        readers = {}
        for name in WEIGHTS:
            write_shard(Path(tmp) / f"{name}.bin", np.zeros(1 << 20, dtype=np.uint16))
            readers[name] = MemmapReader(Path(tmp) / f"{name}.bin")
        cases = {
            "step 0": lambda: _sampler(readers, WEIGHTS, 0),
            "step 1e9, same weights": lambda: _sampler(readers, WEIGHTS, FAR),
            "step 1e9, just after a weight change": lambda: _sampler(readers, SCHEDULE, FAR),
            "step 1e9, 4-phase schedule": lambda: _sampler(readers, SCHEDULE, FAR // 2 + 10),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, make in cases.items():
                s = make()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    s.advance()
                times[name].append((time.perf_counter() - t0) / args.steps * 1e6)
    base = statistics.median(times["step 0"])
    print("| position | µs per step (median) | vs step 0 |\n|---|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.1f} | {statistics.median(ts) / base:.2f} |")


if __name__ == "__main__":
    main()
