"""rank/world_size from a torch.distributed process group (the data-parallel one under TP/PP)."""

from __future__ import annotations

import pytest
import torch.distributed as dist

import streamtok
from streamtok import ConfigError
from streamtok.sampler import resolve_rank


@pytest.fixture
def tp2_dp4(monkeypatch):
    """Global rank 5 of 8 with tensor parallelism 2: data-parallel rank 2 of 4 in ``group``."""
    group = object()
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda g=None: 2 if g is group else 5)
    monkeypatch.setattr(dist, "get_world_size", lambda g=None: 4 if g is group else 8)
    return group


def test_group_gives_the_data_parallel_place(tp2_dp4, shard_dir):
    assert resolve_rank(None, None) == (5, 8)  # what the global default would wrongly give
    assert resolve_rank(None, None, tp2_dp4) == (2, 4)
    loader = streamtok.loader(shard_dir[0], seq_len=16, batch_size=2, group=tp2_dp4, metrics=False)
    sampler = loader.collator.source
    assert (sampler.rank, sampler.world_size) == (2, 4)
    assert (sampler.rebatch(3).rank, sampler.rebatch(3).world_size) == (2, 4)


def test_group_errors(tp2_dp4, monkeypatch):
    with pytest.raises(ConfigError, match="either group= or rank="):
        resolve_rank(1, None, tp2_dp4)
    monkeypatch.setattr(dist, "get_rank", lambda g=None: -1 if g is tp2_dp4 else 5)
    with pytest.raises(ConfigError, match="global rank 5.*not a member"):
        resolve_rank(None, None, tp2_dp4)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    with pytest.raises(ConfigError, match="init_process_group"):
        resolve_rank(None, None, tp2_dp4)


def test_a_real_gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        assert resolve_rank(None, None, dist.new_group([0])) == (0, 1)
    finally:
        dist.destroy_process_group()
