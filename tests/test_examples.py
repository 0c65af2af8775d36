"""The examples, run as a user runs them: killed with SIGKILL and resumed, and under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import streamtok
from streamtok._formats import write_shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
TINY = ["--seq-len", "32", "--batch-size", "4", "--n-layer", "1", "--n-head", "2", "--n-embd", "32"]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    # A skewed unigram distribution, so a tiny model's loss visibly falls within a few steps.
    probs = 1.0 / np.arange(1, 50258) ** 1.2
    probs /= probs.sum()
    for name, n in [("demo_train_000000", 30000), ("demo_train_000001", 30000), ("demo_val_000000", 5000)]:
        write_shard(tmp_path / "shards" / f"{name}.bin", rng.choice(50257, n, p=probs).astype(np.uint16))
    return tmp_path / "shards"


def train_cmd(data, out, *extra):
    return [sys.executable, os.path.join(EXAMPLES, "train_gpt.py"), "--data", str(data), "--out", str(out),
            "--num-workers", "1", "--eval-every", "10", "--eval-batches", "2", *TINY, *extra]


def read_log(path):
    """Last record per step (a killed run may log steps it never checkpointed)."""
    by_step = {}
    for line in open(path).read().split("\n"):
        if line:
            step, rest = line.split(" ", 1) if " " in line else (None, line)
            by_step[int(step)] = rest
    return [by_step[k] for k in sorted(by_step)]


@pytest.mark.slow
def test_train_gpt_sigkill_and_resume_sees_the_same_batches(data, tmp_path):
    steps = ["--steps", "30", "--ckpt-every", "10"]
    ref_out, ref_batches = tmp_path / "ref", tmp_path / "ref_batches.txt"
    subprocess.run(train_cmd(data, ref_out, *steps, "--log-batches", str(ref_batches)), check=True,
                   stdout=subprocess.DEVNULL, timeout=300)

    out, batches = tmp_path / "run", tmp_path / "batches.txt"
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen(train_cmd(data, out, *steps, "--log-batches", str(batches)), stdout=log, stderr=log)
        deadline = time.monotonic() + 240
        # Kill once the step-20 checkpoint exists and a few more batches were trained on.
        while time.monotonic() < deadline and proc.poll() is None:
            done = batches.read_text().count("\n") if batches.exists() else 0
            if done >= 23:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "ckpt.pt.tmp").exists() or (out / "ckpt.pt").exists()
    subprocess.run(train_cmd(data, out, *steps, "--log-batches", str(batches), "--resume"), check=True,
                   stdout=subprocess.DEVNULL, timeout=300)

    assert read_log(batches) == read_log(ref_batches)
    ref_loss = {r["step"]: r["loss"] for r in map(json.loads, open(ref_out / "log.jsonl"))}
    run_loss = {}
    for r in map(json.loads, open(out / "log.jsonl")):
        run_loss[r["step"]] = r["loss"]  # the resumed run's value wins for replayed steps
    assert sorted(run_loss) == list(range(1, 31))
    assert all(abs(run_loss[s] - ref_loss[s]) < 1e-3 for s in range(21, 31)), "loss curve did not continue"
    assert np.mean([ref_loss[s] for s in range(26, 31)]) < np.mean([ref_loss[s] for s in range(1, 6)])


def row_hashes(path):
    return [line.split()[1] for line in open(path).read().split("\n") if line]


@pytest.mark.slow
def test_ddp_two_ranks_then_resume_at_world_size_one(data, tmp_path):
    out, samples = tmp_path / "ddp", tmp_path / "samples"
    args = [os.path.join(EXAMPLES, "ddp_torchrun.py"), "--data", str(data), "--out", str(out),
            "--log-samples", str(samples), "--ckpt-every", "3", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
                    "--steps", "6"], check=True, env=env, stdout=subprocess.DEVNULL, timeout=300)
    subprocess.run([sys.executable, *args, "--steps", "12", "--resume"], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=300)

    r0, r1 = row_hashes(samples / "world2_rank0.txt"), row_hashes(samples / "world2_rank1.txt")
    single = row_hashes(samples / "world1_rank0.txt")
    assert len(r0) == len(r1) == 6 * 4 and not set(r0) & set(r1)
    # What one process reading the same epoch order sees: ranks' rows, then the resumed rows.
    ref = streamtok.loader(data, seq_len=32, batch_size=4, epochs=None, rank=0, world_size=1)
    import hashlib

    expected = []
    for i, (x, _) in enumerate(ref):
        if i == 24:
            break
        expected += [hashlib.sha1(r.tobytes()).hexdigest() for r in x.numpy()]
    interleaved = [h for g in range(6) for h in r0[g * 4 : g * 4 + 4] + r1[g * 4 : g * 4 + 4]]
    assert interleaved == expected[:48]
    assert single == expected[48:72]


def test_nanogpt_swap_get_batch(tmp_path):
    sys.path.insert(0, EXAMPLES)
    try:
        from nanogpt_swap import make_get_batch
    finally:
        sys.path.remove(EXAMPLES)
    rng = np.random.default_rng(1)
    train = rng.integers(0, 50257, 20000, dtype=np.uint16)
    train.tofile(tmp_path / "train.bin")  # nanoGPT's raw uint16 files
    rng.integers(0, 50257, 5000, dtype=np.uint16).tofile(tmp_path / "val.bin")
    get_batch, state = make_get_batch(str(tmp_path), block_size=64, batch_size=8, device="cpu", num_workers=0)
    x, y = get_batch("train")
    assert x.shape == y.shape == (8, 64) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    row = x[0].numpy().astype(np.uint16)
    starts = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(train, 64).__eq__(row).all(axis=1))
    assert len(starts) == 1  # each row is a real window of train.bin
    saved = state.state_dict()
    after = [get_batch("train") for _ in range(3)]
    get_batch2, state2 = make_get_batch(str(tmp_path), block_size=64, batch_size=8, device="cpu", num_workers=0)
    state2.load_state_dict(saved)
    assert all(torch.equal(a[0], get_batch2("train")[0]) for a in after)
    assert get_batch("val")[0].shape == (8, 64)


@pytest.mark.slow
def test_fineweb_edu_example_offline_from_the_hub_cache(tmp_path):
    from prep_helpers import make_hub_cache

    names = [f"edu_fineweb_train_{i:06d}.bin" for i in (1, 2, 3)]
    cache = make_hub_cache(tmp_path / "hub", "karpathy/fineweb-edu-100B-gpt2-token-shards", names, n_tokens=20000, seed=0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    run = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "fineweb_edu.py"), "--out", str(tmp_path / "run"), "--steps", "3"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "train: 2 shards, val: 1 shard" in run.stdout and "edu_fineweb_train_000003.bin" in run.stdout
    assert (tmp_path / "run" / "ckpt.pt").exists()
    missing = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "fineweb_edu.py"), "--shards", "1:4", "--out", str(tmp_path / "r2")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 1 and "edu_fineweb_train_000004.bin" in missing.stderr
    assert "Traceback" not in missing.stderr


def printed_command(stdout: str, label: str) -> list[str]:
    """The command a run printed after ``label`` (e.g. ``resume:``), as argv."""
    import shlex

    (line,) = [line for line in stdout.splitlines() if line.startswith(label)]
    return shlex.split(line[len(label):])


@pytest.mark.slow
def test_the_demos_printed_resume_command_runs(tmp_path):
    """The demo trains a non-default model; the command it prints resumes it as printed."""
    env = {**os.environ, "STREAMTOK_METRICS": "0"}
    demo = subprocess.run([sys.executable, os.path.join(EXAMPLES, "demo.py"), "--steps", "2", "--shards", "shards",
                           "--run", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    cmd = printed_command(demo.stdout, "resume:")
    assert cmd[0] == sys.executable and cmd[cmd.index("--steps") + 1] == "4"
    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from run/ckpt.pt at step 2" in resumed.stdout and "--n-embd 64" in resumed.stdout
    assert torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)["step"] == 4
    # A setting given again with another value is refused, naming both values.
    clash = subprocess.run([*cmd[:-1], "6", "--n-embd", "128"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert clash.returncode == 2 and "--n-embd 128" in clash.stderr and "--n-embd 64" in clash.stderr
    assert "Traceback" not in clash.stderr


@pytest.mark.slow
def test_the_printed_resume_command_of_a_mixture_run_runs(tmp_path):
    """After --mix/--anneal the printed command keeps them and continues the mixture's counts."""
    rng = np.random.default_rng(0)
    for src in ("web", "code"):
        for part, n in (("train", 12000), ("val", 3000)):
            write_shard(tmp_path / "data" / src / f"{src}_{part}_000000.bin", rng.integers(0, 500, n).astype(np.uint16))
    env = {**os.environ, "STREAMTOK_METRICS": "0"}
    first = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "train_gpt.py"), "--data", "data", "--out", "run",
         "--mix", "web=0.7,code=0.3", "--anneal", "4:web=0.2,code=0.8", "--steps", "4", "--seq-len", "16",
         "--batch-size", "5", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--eval-every", "4",
         "--eval-batches", "1", "--num-workers", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    cmd = printed_command(first.stdout, "resume:")
    assert cmd[0] == sys.executable and "--mix" in cmd and "--anneal" in cmd
    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    windows = {n: s["windows"] for n, s in ckpt["loader"]["sampler"]["sources"].items()}
    assert ckpt["step"] == 8 and windows == {"web": 14 + 4, "code": 6 + 16}  # 4 steps of 5 at 0.7/0.3, 4 at 0.2/0.8


def test_make_pictures_draws_the_bench_chart_from_its_json(tmp_path):
    """docs/make_pictures.py draws the README's chart from a bench report (the saved one)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "make_pictures.py"), "--no-bench", "--no-screenshot",
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < out.stat().st_size < 300_000
    assert os.path.getsize(os.path.join(ROOT, "docs", "bench.png")) < 300_000
    report = json.load(open(os.path.join(ROOT, "docs", "bench.json")))
    names = {r["name"] for r in report["results"]}
    assert {"nanogpt", "mapstyle:workers=0", "streamtok:mode=shuffle,workers=0"} <= names
