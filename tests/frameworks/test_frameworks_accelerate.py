"""HF Accelerate: ``prepare`` passes a streamtok loader through; save_state/load_state resume it exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _util import TESTS, make_shards, run_or_show

import streamtok
from streamtok.errors import ConfigError

accelerate = pytest.importorskip("accelerate", reason="HF Accelerate is not installed (pip install -e '.[dev]')")
from streamtok.frameworks.accelerate import prepare_loader  # noqa: E402

HERE = TESTS
T, B, K = 16, 2, 5  # as in fw_accelerate_script.py


def test_a_dataloader_rebuilt_over_the_inner_stream_is_refused(shard_dir):
    """What accelerate's own prepare does (a new DataLoader over loader.dataset, sharded
    again): refused with a message naming the way out, instead of reading garbage."""
    from accelerate.data_loader import prepare_data_loader

    loader = streamtok.loader(shard_dir[0], seq_len=T, batch_size=B, split="all", metrics=False)
    rebuilt = prepare_data_loader(loader, num_processes=2, process_index=0, put_on_device=False)
    assert rebuilt is not loader and rebuilt.dataset is not loader.dataset  # an IterableDatasetShard
    with pytest.raises(ConfigError, match="prepare_loader"):
        next(iter(rebuilt))
    with pytest.raises(ConfigError, match="iterate the loader itself"):
        next(iter(torch.utils.data.DataLoader(loader.dataset, batch_size=None)))


def test_prepare_loader_makes_prepare_pass_it_through(shard_dir):
    acc = accelerate.Accelerator(cpu=True)
    loader = streamtok.loader(shard_dir[0], seq_len=T, batch_size=B, split="all", metrics=False)
    assert prepare_loader(acc, loader) is loader
    assert prepare_loader(acc, loader) is loader  # registered once, not twice
    assert acc.prepare(loader) is loader
    assert sum(obj is loader for obj in acc._custom_objects) == 1
    other = streamtok.loader(shard_dir[0], seq_len=T, batch_size=B, split="all", rank=1, world_size=2, metrics=False)
    with pytest.raises(ConfigError, match="rank 1 of 2.*rank 0 of 1"):
        prepare_loader(acc, other)
    with pytest.raises(ConfigError, match="StreamtokLoader"):
        prepare_loader(acc, torch.utils.data.DataLoader(range(4)))


@pytest.mark.slow
def test_two_processes_each_rank_once_and_exact_resume(tmp_path):
    make_shards(tmp_path / "data", [800, 700])  # 88 windows: 22 global steps of 2 x 2 rows
    data = str(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    script = str(HERE / "fw_accelerate_script.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run_or_show([*torchrun, script, data, str(tmp_path)], env=env, timeout=120)
    ranks = [json.loads((tmp_path / f"run_rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # Each global step: rank 0's rows then rank 1's are the single-process batch of 2B rows.
    single = [x[:, 0].tolist() for x, _ in streamtok.loader(data, seq_len=T, batch_size=2 * B, split="all", rank=0, world_size=1)]
    assert [a + b for a, b in zip(ranks[0]["starts"], ranks[1]["starts"], strict=True)] == single
    rows = [s for r in ranks for step in r["starts"] for s in step]
    assert len(rows) == len(set(rows)), "a window was read twice"

    # save_state after step K, load_state in fresh Accelerators: the same batches, bit for bit.
    for r in ranks:
        assert r["resumed_hashes"] == r["hashes"][K:]
    # One copy of the position, written once by the main process.
    assert "custom_checkpoint_0.pkl" in ranks[0]["files"] and not any(f.startswith("dl_state_dict") for f in ranks[0]["files"])

    # The same checkpoint at world size 1 (batch 2B), here: the rest of both ranks' rows, in order.
    acc = accelerate.Accelerator(cpu=True)
    assert acc.num_processes == 1
    model = torch.nn.Embedding(64, 4)
    loader = streamtok.loader(data, seq_len=T, batch_size=2 * B, split="all", metrics=False)
    acc.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1), prepare_loader(acc, loader))
    acc.load_state(str(tmp_path / "ckpt"))
    alone = [x[:, 0].tolist() for x, _ in loader]
    assert alone == [a + b for a, b in zip(ranks[0]["starts"][K:], ranks[1]["starts"][K:], strict=True)]


def test_import_streamtok_imports_no_framework():
    code = "import streamtok, streamtok.frameworks, sys; print(sorted(m for m in ('accelerate', 'lightning', 'torchtitan') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"
