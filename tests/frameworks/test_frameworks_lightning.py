"""Lightning: a StreamtokDataModule under 2-process ddp; Trainer checkpoints resume the data exactly."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from _util import TESTS, make_shards, run_or_show

import streamtok
from streamtok.errors import ConfigError

pl = pytest.importorskip("lightning.pytorch", reason="Lightning is not installed (pip install -e '.[dev]')")
from streamtok.frameworks.lightning import StreamtokDataModule  # noqa: E402

HERE = TESTS
sys.path.insert(0, str(HERE))
import fw_lightning_script as script  # noqa: E402

T, B, K = script.T, script.B, script.K


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process ddp run of two epochs over ~22 global steps an epoch."""
    root = tmp_path_factory.mktemp("lightning")
    make_shards(root / "data", [800, 700])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    run_or_show([sys.executable, str(HERE / "fw_lightning_script.py"), str(root / "data"), str(root / "run"), "2"],
                   env=env, timeout=150)
    ranks = [json.loads((root / "run" / f"rank{r}.json").read_text()) for r in range(2)]
    return root, ranks


def _global(data, epochs=2):
    """The single-process global batches (2B rows a step), epoch after epoch."""
    loader = streamtok.loader(data, seq_len=T, batch_size=2 * B, split="all", rank=0, world_size=1, metrics=False)
    return [x[:, 0].tolist() for _ in range(epochs) for x, _ in loader]


@pytest.mark.slow
def test_each_rank_reads_its_own_batches_once(ddp_run):
    root, ranks = ddp_run
    steps = [[s[0] for s in r] for r in ranks]
    assert steps[0] == steps[1] == list(range(len(steps[0])))
    # use_distributed_sampler (on by default) left the loader alone: rank 0 then rank 1 is the global batch.
    assert [a[1] + b[1] for a, b in zip(*ranks, strict=True)] == _global(root / "data")
    per_epoch = len(ranks[0]) // 2
    for epoch in range(2):
        rows = [s for r in ranks for step in r[epoch * per_epoch : (epoch + 1) * per_epoch] for s in step[1]]
        assert len(rows) == len(set(rows)), f"a window was read twice in epoch {epoch}"


def _resume(root, ckpt, tmp_path):
    out = tmp_path / "resumed"
    script.out = str(out)
    out.mkdir()
    script.main(str(root / "data"), str(out), 1, str(ckpt))
    return json.loads((out / "rank0.json").read_text())


@pytest.mark.slow
def test_mid_epoch_checkpoint_resumes_exactly_at_one_process(ddp_run, tmp_path):
    root, ranks = ddp_run
    ckpt = root / "run" / "steps" / f"epoch=0-step={K}.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    # Lightning saved the loader's own state (the fit loop's), and the data module's copy.
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0] == saved["StreamtokDataModule"]["train"]
    resumed = _resume(root, ckpt, tmp_path)
    assert [s[0] for s in resumed] == [s[0] for s in ranks[0][K:]]
    assert [s[1] for s in resumed] == [a[1] + b[1] for a, b in zip(ranks[0][K:], ranks[1][K:], strict=True)]
    # Rank 1 of 2 resumes from rank 0's saved state too: its own rows, from the same step.
    rank1 = streamtok.loader(root / "data", seq_len=T, batch_size=B, split="all", rank=1, world_size=2, metrics=False)
    rank1.load_state_dict(saved["StreamtokDataModule"]["train"])
    assert [x[:, 0].tolist() for x, _ in rank1] == [s[1] for s in ranks[1][K : len(ranks[1]) // 2]]


@pytest.mark.slow
def test_end_of_epoch_checkpoint_starts_the_next_epoch(ddp_run, tmp_path):
    """Lightning does not load loader states at an epoch's end: the data module's copy does."""
    root, ranks = ddp_run
    per_epoch = len(ranks[0]) // 2
    ckpt = root / "run" / "epochs" / f"epoch=0-step={per_epoch}.ckpt"
    resumed = _resume(root, ckpt, tmp_path)
    assert [s[1] for s in resumed] == [a[1] + b[1] for a, b in zip(ranks[0][per_epoch:], ranks[1][per_epoch:], strict=True)]


def test_an_endless_loader_is_refused(shard_dir):
    dm = StreamtokDataModule(lambda: streamtok.loader(shard_dir[0], seq_len=T, batch_size=B, epochs=None, metrics=False))
    with pytest.raises(ConfigError, match="endless"):
        dm.train_dataloader()


def test_a_loader_for_another_rank_is_refused(shard_dir):
    dm = StreamtokDataModule(lambda: streamtok.loader(shard_dir[0], seq_len=T, batch_size=B, rank=1, world_size=2, metrics=False))
    with pytest.raises(ConfigError, match="rank 1 of 2.*rank 0 of 1"):
        dm.train_dataloader()
