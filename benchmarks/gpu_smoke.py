"""GPU smoke test: the CUDA paths that CI (no GPU) cannot run, in under 2 minutes on one GPU.

Checks, under ``torch.cuda.set_sync_debug_mode("error")`` (a hidden device sync raises):

1. ``--batches`` batches (default 1000) through :class:`~streamtok.CUDAPrefetcher` equal the
   CPU reference, with a deliberately slow consumer kernel before each batch is read and each
   batch freed at once (a missing event wait or ``record_stream`` shows as wrong sums):
   0 and 2 workers x background thread on and off, and B=1 from an int64 ``.npy`` (a batch
   that used to be a view of a worker's slot).
2. Pinned buffers are pinned: ``pin_memory=True`` loaders hand out pinned compact buffers
   and ``(x, y)``, with and without workers.
3. A process that uses ``cuda:1`` (``LOCAL_RANK=1``, prefetcher built before
   ``torch.cuda.set_device``) gets its batches on ``cuda:1`` and makes no CUDA context on
   ``cuda:0`` (a child process; needs a second GPU, else reported as skipped).
4. Throughput with a 1 ms simulated step (a GPU sleep kernel): the prefetcher against a plain
   loop (pageable ``.to(device)``, and pinned ``non_blocking`` copies on the compute stream).

Each batch is summed on the device with position weights (int64, exact), so nothing is copied
back per batch. Prints one line per check; exits 1 if one fails. Without CUDA it prints SKIP
and exits 0 (CI runs it that way). Usage::

    python benchmarks/gpu_smoke.py [--batches 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

T = 256  # tokens per row in the correctness checks


def data_dir(root: Path) -> tuple[Path, Path]:
    """GPT-2-like uint16 shards, and an int64 ``.npy`` (what ``np.save`` of a list gives)."""
    from streamtok._formats import write_shard

    rng = np.random.default_rng(0)
    write_shard(root / "u16" / "train_000000.bin", rng.integers(0, 50257, 3_000_000, dtype=np.uint16))
    (root / "i64").mkdir()
    np.save(root / "i64" / "train.npy", np.arange(400_000, dtype=np.int64))
    return root / "u16", root / "i64"


def make_loader(data: Path, batch_size: int, workers: int, pin: bool, seq_len: int = T):
    import streamtok

    return streamtok.loader(
        data, seq_len=seq_len, batch_size=batch_size, split="all", mode="shuffle", seed=1,
        epochs=None, num_workers=workers, pin_memory=pin, metrics=False,
    )


def weighted_sums(batches, n: int, weights: torch.Tensor, slow_cycles: int = 0) -> torch.Tensor:
    """``(n, 2)`` int64 sums of ``x * weights`` and ``y * weights``, computed where they lie."""
    sums = torch.empty((n, 2), dtype=torch.int64, device=weights.device)
    it = iter(batches)
    for i in range(n):
        x, y = next(it)
        if slow_cycles:
            torch.cuda._sleep(slow_cycles)  # the consumer lags: copies of later batches run ahead
        sums[i, 0] = (x.long() * weights).sum()
        sums[i, 1] = (y.long() * weights).sum()
        del x, y  # freed at once: the allocator may reuse the memory for a later batch
    del it
    return sums


def cycles_per_ms() -> int:
    """GPU clock cycles of ``torch.cuda._sleep`` that take about 1 ms."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)  # warm-up
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return int(10_000_000 / start.elapsed_time(end))


def check_equal_to_cpu(u16: Path, i64: Path, n: int, slow_cycles: int) -> list[tuple[str, bool, str]]:
    import streamtok

    device = torch.device("cuda", torch.cuda.current_device())
    gen = torch.Generator().manual_seed(0)
    weights = torch.randint(1, 1 << 20, (T,), generator=gen, dtype=torch.int64)
    cases = [(u16, 8, w, bg) for w in (0, 2) for bg in (False, True)] + [(i64, 1, 2, True)]
    results = []
    for data, batch_size, workers, background in cases:
        name = f"equal-to-cpu {data.name} B={batch_size} workers={workers} thread={'on' if background else 'off'}"
        ref = weighted_sums(make_loader(data, batch_size, 0, False), n, weights)
        pf = streamtok.CUDAPrefetcher(make_loader(data, batch_size, workers, True), device=device, background=background)
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = weighted_sums(pf, n, weights.to(device), slow_cycles)
        except RuntimeError as exc:
            results.append((name, False, f"raised {exc}"))
            continue
        finally:
            torch.cuda.set_sync_debug_mode(0)
        wrong = int((got.cpu() != ref).any(dim=1).sum())
        results.append((name, wrong == 0, f"{wrong} of {n} batches differ"))
    return results


def check_pinned(u16: Path) -> list[tuple[str, bool, str]]:
    results = []
    for workers in (0, 2):
        loader = make_loader(u16, 8, workers, True)
        buf = next(iter(loader.iter_compact()))
        x, y = next(iter(loader))
        ok = buf.is_pinned() and x.is_pinned() and y.is_pinned()
        results.append((f"pinned workers={workers}", ok, f"compact {buf.is_pinned()}, x {x.is_pinned()}, y {y.is_pinned()}"))
    return results


def child_on_cuda1(u16: str) -> None:
    """Run in a child with LOCAL_RANK=1: use cuda:1 as a torchrun rank would; report contexts."""
    import streamtok

    out = {}
    for workers, background in ((2, True), (0, False)):
        pf = streamtok.CUDAPrefetcher(make_loader(Path(u16), 8, workers, True), background=background)
        torch.cuda.set_device(1)  # after the prefetcher, as in many training scripts
        it = iter(pf)
        for _ in range(50):
            x, y = next(it)
            total = x.sum() + y.sum()
        del it
        out[f"workers={workers}"] = str(x.device)
    torch.cuda.synchronize(1)
    has_context = getattr(torch._C, "_cuda_hasPrimaryContext", None)
    out["context_on_0"] = None if has_context is None else bool(has_context(0))
    out["total"] = int(total)
    print(json.dumps(out))


def check_no_context_on_0(u16: Path) -> list[tuple[str, bool, str]]:
    if torch.cuda.device_count() < 2:
        return [("no context on cuda:0", True, "skipped: one GPU")]
    env = {**os.environ, "LOCAL_RANK": "1"}
    done = subprocess.run([sys.executable, __file__, "--child-cuda1", str(u16)], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return [("no context on cuda:0", False, done.stderr[-500:])]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    on_1 = all(report[k] == "cuda:1" for k in ("workers=2", "workers=0"))
    return [
        ("batches on cuda:1 from LOCAL_RANK", on_1, str({k: report[k] for k in ("workers=2", "workers=0")})),
        ("no context on cuda:0", report["context_on_0"] is False, f"context on cuda:0: {report['context_on_0']}"),
    ]


def throughput(u16: Path, n: int, step_cycles: int) -> list[tuple[str, bool, str]]:
    import streamtok

    device = torch.device("cuda", torch.cuda.current_device())
    batch_size, seq_len, warm = 32, 1024, 20

    def plain(pinned: bool):
        for x, y in make_loader(u16, batch_size, 2, pinned, seq_len):
            yield x.to(device, non_blocking=pinned), y.to(device, non_blocking=pinned)

    def prefetched():
        yield from streamtok.CUDAPrefetcher(make_loader(u16, batch_size, 2, True, seq_len), device=device)

    rates = {}
    for name, source in (("plain pageable", plain(False)), ("plain pinned", plain(True)), ("prefetcher", prefetched())):
        for i, (x, y) in enumerate(source):
            if i == warm:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            torch.cuda._sleep(step_cycles)  # the 1 ms training step
            if i == warm + n:
                break
        torch.cuda.synchronize()
        rates[name] = n / (time.perf_counter() - t0)
        source.close()
    ideal = 1000.0  # steps/s with a 1 ms step and free data
    line = ", ".join(f"{k} {v:.0f} steps/s ({v / ideal:.0%} of ideal)" for k, v in rates.items())
    ratio = rates["prefetcher"] / rates["plain pageable"]
    return [(f"throughput B={batch_size} T={seq_len} 1 ms step", True, f"{line}; prefetcher/plain pageable {ratio:.2f}x")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=1000)
    p.add_argument("--child-cuda1", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device here (this smoke test needs a GPU)")
        return 0
    if args.child_cuda1:
        child_on_cuda1(args.child_cuda1)
        return 0
    t_start = time.perf_counter()
    print(f"gpu_smoke: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="streamtok-gpu-smoke-") as tmp:
        u16, i64 = data_dir(Path(tmp))
        per_ms = cycles_per_ms()
        results = check_equal_to_cpu(u16, i64, args.batches, per_ms // 5)  # a 200 µs consumer kernel
        results += check_pinned(u16)
        results += check_no_context_on_0(u16)
        results += throughput(u16, 300, per_ms)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
