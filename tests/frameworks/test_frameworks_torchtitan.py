"""torchtitan: TitanLoader under torchtitan's CheckpointManager (DCP) resumes at another DP degree."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import pytest
from _util import TESTS, make_shards, run_or_show

import streamtok
from streamtok.errors import ConfigError, StateMismatchError

pytest.importorskip("torchtitan", reason="torchtitan is not installed (pip install -e '.[dev]', Python >= 3.11)")
from torch.distributed.checkpoint.stateful import Stateful  # noqa: E402
from torchtitan.components.dataloader import BaseDataLoader, ParallelAwareDataloader  # noqa: E402

from streamtok.frameworks.torchtitan import TitanLoader  # noqa: E402

HERE = TESTS
sys.path.insert(0, str(HERE))
import fw_torchtitan_script as script  # noqa: E402

T, GLOBAL_B, K = script.T, script.GLOBAL_B, script.K


def _titan(data, dp, rank, **config):
    return TitanLoader.Config(dataset_path=str(data), split="all", epochs=1, **config).build(
        dp_world_size=dp, dp_rank=rank, seq_len=T, local_batch_size=GLOBAL_B // dp, tokenizer=None, snapshot_every_n_steps=None)


def _read(path):
    return json.loads(Path(path).read_text())


def test_fits_torchtitans_interface(shard_dir):
    titan = _titan(shard_dir[0], 2, 1)
    assert isinstance(titan, BaseDataLoader) and isinstance(titan, Stateful)
    inputs, labels = next(iter(titan))
    assert set(inputs) == {"input"} and inputs["input"].shape == labels.shape == (GLOBAL_B // 2, T)
    assert (inputs["input"][:, 1:] == labels[:, :-1]).all()
    with pytest.raises(ConfigError, match="dataset_path"):
        TitanLoader.Config().build(dp_world_size=1, dp_rank=0, seq_len=T, local_batch_size=2)
    wrapped = TitanLoader.wrap(streamtok.loader(shard_dir[0], seq_len=T, batch_size=2, split="all", metrics=False))
    assert json.loads(wrapped.state_dict()["streamtok"])["sampler"]["offset"] == 0


def test_the_state_is_one_key_for_every_rank_and_loads_at_another_dp_degree(shard_dir):
    """torchtitan's own loader refuses another DP degree; TitanLoader's one state does not."""
    own = ParallelAwareDataloader(streamtok.loader(shard_dir[0], seq_len=T, batch_size=2, split="all").dataset, dp_rank=0, dp_world_size=2)
    state = own.state_dict()
    assert set(state) == {"dp_rank_0", "world_size"}
    with pytest.raises(AssertionError, match="resharding is not supported"):
        ParallelAwareDataloader(own.dataset, dp_rank=0, dp_world_size=1).load_state_dict(state)
    with pytest.raises(StateMismatchError, match="dp_rank"):
        _titan(shard_dir[0], 1, 0).load_state_dict(state)

    ranks = [_titan(shard_dir[0], 2, r) for r in range(2)]
    heads = [[x["input"][:, 0].tolist() for _, (x, _) in zip(range(K), t)] for t in ranks]
    states = [t.state_dict() for t in ranks]
    assert set(states[0]) == set(states[1]) == {"streamtok"}
    alone = _titan(shard_dir[0], 1, 0)
    alone.load_state_dict(states[1])  # any rank's copy: DCP keeps one of them
    rest = [x["input"][:, 0].tolist() for x, _ in alone]
    full = [x["input"][:, 0].tolist() for x, _ in _titan(shard_dir[0], 1, 0)]
    assert [a + b for a, b in zip(*heads)] + rest == full
    assert pickle.loads(pickle.dumps(states[0])) == states[0]


@pytest.mark.slow
def test_checkpoint_manager_resumes_across_dp_degrees(tmp_path):
    """DP 1 -> 2 and DP 2 -> 1 through torchtitan's CheckpointManager and DCP, two gloo processes."""
    data = tmp_path / "data"
    make_shards(data, [800, 700])
    one, two, back = tmp_path / "dp1", tmp_path / "dp2", tmp_path / "back"
    for d in (one, two, back):
        d.mkdir()
    script.run(str(data), str(one), 1, 0)  # DP 1: one epoch, DCP checkpoint at step K
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    run_or_show([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(HERE / "fw_torchtitan_script.py"), str(data), str(two), "2", str(one)],
                   env=env, timeout=150)
    script.run(str(data), str(back), 1, 0, load_from=str(two))  # DP 2's checkpoint, at DP 1

    full = _read(one / "run_rank0.json")
    both = lambda name: [a + b for a, b in zip(_read(two / f"{name}_rank0.json"), _read(two / f"{name}_rank1.json"), strict=True)]  # noqa: E731
    assert both("run") == full  # each DP rank its own half of every global batch
    assert both("loaded") == full[K:]  # DP 1's checkpoint at DP 2: the rest of the epoch, nothing twice
    assert _read(back / "loaded_rank0.json") == full[K:]  # and DP 2's at DP 1
    rows = [s for step in full for s in step]
    assert len(rows) == len(set(rows))
    # The layout: one dataloader entry in DCP's metadata, whatever the number of DP ranks.
    from torch.distributed.checkpoint import FileSystemReader

    keys = FileSystemReader(str(two / "ckpt" / f"step-{K}")).read_metadata().state_dict_metadata
    assert [k for k in keys if k.startswith("dataloader")] == ["dataloader.streamtok"]
