"""Two real ranks under torch.distributed (gloo, CPU): disjoint samples, elastic resume 2 -> 1."""

import json
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import streamtok

T, B, K = 32, 4, 6


def _rank_main(rank, world, init_file, data, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loader = streamtok.loader(data, seq_len=T, batch_size=B, split="all", num_workers=1)
        assert (loader.collator.source.rank, loader.collator.source.world_size) == (rank, world)
        starts, state = [], None
        for step, (x, _) in enumerate(loader, 1):
            starts += x[:, 0].tolist()
            if step == K:
                state = loader.state_dict()
                head = list(starts)
        dist.barrier()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"starts": starts, "head": head, "state": state}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_disjoint_and_resume_at_world_size_one(shard_dir, tmp_path):
    data, tokens = shard_dir
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(data), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    a, b = set(ranks[0]["starts"]), set(ranks[1]["starts"])
    n_windows = tokens.size // (T + 1)
    assert not a & b and len(a) == len(b) == n_windows // (2 * B) * B
    assert ranks[0]["state"] == ranks[1]["state"] | {"sampler": {**ranks[1]["state"]["sampler"], "rank": 0}}

    single = streamtok.loader(data, seq_len=T, batch_size=B, split="all", rank=0, world_size=1)
    single.load_state_dict(ranks[0]["state"])
    rest = [s for x, _ in single for s in x[:, 0].tolist()]
    seen = ranks[0]["head"] + ranks[1]["head"] + rest
    assert len(seen) == len(set(seen)), "a window was repeated after resuming at world size 1"
    assert n_windows - len(seen) < B, "windows were skipped"
