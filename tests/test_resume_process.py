"""Resume in a new process, after a real SIGKILL, for every mode, with and without workers."""

import os
import signal
import subprocess
import sys

import pytest
from _util import batch_hash

import streamtok

SCRIPT = os.path.join(os.path.dirname(__file__), "stream_script.py")


def run(*args):
    """Run the script; its output goes to a file, since orphaned workers of a killed
    trainer would hold a pipe open until they notice (up to 5 s)."""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    err_path = f"{args[1]}.stderr"
    with open(err_path, "w") as err:
        proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], env=env, timeout=120, stdout=err, stderr=err)
    with open(err_path) as err:
        proc.stderr = err.read()
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_then_resume_in_new_process(shard_dir, tmp_path, mode, workers):
    path, _ = shard_dir
    reference = [batch_hash(x, y) for x, y in streamtok.loader(path, seq_len=32, batch_size=4, mode=mode, epochs=2, seed=5)]
    per_epoch = len(reference) // 2
    kill_after = per_epoch + 3 if mode == "shuffle" else 17  # once across the epoch boundary
    log, ckpt = tmp_path / "log.txt", tmp_path / "ckpt.json"
    killed = run(path, log, ckpt, mode, workers, 2, kill_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(log.read_text().split()) == kill_after
    resumed = run(path, log, ckpt, mode, workers, 2)
    assert resumed.returncode == 0, resumed.stderr
    assert log.read_text().split() == reference
