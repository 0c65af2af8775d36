"""streamtok's stages as torchdata nodes: the order, exact resume, and composition with torchdata's own nodes."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest
import torch
from _util import make_shards
from torchdata import nodes

import streamtok
from streamtok.errors import ConfigError, StateMismatchError
from streamtok.nodes import BatchNode, SplitNode, WindowNode

T, B = 32, 4


def _key(item) -> str:
    """A hashable digest of whatever a pipeline yields (tensors, tuples, dicts)."""
    if isinstance(item, torch.Tensor):
        return item.numpy().tobytes().hex()[:64] + str(tuple(item.shape))
    if isinstance(item, dict):
        return repr(sorted((k, _key(v)) for k, v in item.items()))
    if isinstance(item, (tuple, list)):
        return repr([_key(i) for i in item])
    return repr(item)


def check_node_resume(make: Callable[[], nodes.BaseNode], midpoints: list[int]) -> int:
    """Two passes of ``nodes.Loader(make())`` as the reference; resume from each midpoint.

    The state goes through pickle (as torch.save would) into a loader built anew; what it
    yields from there, pass by pass, must be the reference's continuation.
    """
    ref = nodes.Loader(make())
    passes = [[_key(b) for b in ref] for _ in range(2)]
    full, n0 = passes[0] + passes[1], len(passes[0])
    assert n0, "the pipeline yielded nothing"
    for k in sorted({0, *midpoints, n0, len(full) - 1}):
        first = nodes.Loader(make())
        head: list[str] = []
        it = iter(first)
        while len(head) < k:
            try:
                head.append(_key(next(it)))
            except StopIteration:
                it = iter(first)
        state = pickle.loads(pickle.dumps(first.state_dict()))
        resumed = nodes.Loader(make())
        resumed.load_state_dict(state)
        tail = [_key(b) for b in resumed]
        if k < n0:
            tail += [_key(b) for b in resumed]
        assert head + tail == full, f"resume after {k} items diverged"
    return len(full)


def check_torchdata_save_load(make: Callable[[], nodes.BaseNode], midpoint: int) -> None:
    """torchdata's own save/load rules for a node (pytorch/data, test/nodes/utils.py).

    From a midpoint of pass 0 and of pass 1, and from the initial state, a loader continues
    exactly; a state saved after pass 0 ended resumes into nothing under
    ``restart_on_stop_iteration=False`` and into pass 1 under the default.
    """
    ref = nodes.Loader(make())
    initial = ref.state_dict()
    passes, mids = [], []
    for _ in range(2):
        it, out = iter(ref), []
        for _ in range(midpoint):
            out.append(_key(next(it)))
        mids.append(pickle.loads(pickle.dumps(ref.state_dict())))
        out += [_key(b) for b in it]
        passes.append(out)
        if len(passes) == 1:
            end0 = pickle.loads(pickle.dumps(ref.state_dict()))
    p0, p1 = passes
    assert len(p0) > midpoint and p0 != p1, "the pipeline must yield two different passes"
    for state, expected in ((mids[0], [p0[midpoint:], p1]), (mids[1], [p1[midpoint:]]), (initial, [p0, p1])):
        loader = nodes.Loader(make())
        loader.load_state_dict(state)
        assert [[_key(b) for b in loader] for _ in expected] == expected
    stopped = nodes.Loader(make(), restart_on_stop_iteration=False)
    stopped.load_state_dict(end0)
    assert [_key(b) for b in stopped] == [], "a state saved at the end of a pass must resume into nothing"
    restarted = nodes.Loader(make())
    restarted.load_state_dict(end0)
    assert [_key(b) for b in restarted] == p1


@pytest.fixture
def reader(tmp_path):
    make_shards(tmp_path / "d", [3000, 1700, 2500])
    return streamtok.MemmapReader(tmp_path / "d")


def test_windows_follow_the_sampler_order_and_batches_hold_the_tokens(reader):
    sampler = streamtok.WindowSampler(reader, T, seed=3, batch_size=1)
    expected = [int(s[0]) for s in sampler]
    node = WindowNode(reader, seq_len=T, seed=3)
    assert list(nodes.Loader(node)) == expected
    tokens = reader[:]
    for x, y in nodes.Loader(BatchNode(WindowNode(reader, seq_len=T, seed=3), B)):
        for row_x, row_y in zip(x.numpy(), y.numpy()):
            s = int(row_x[0])  # tokens are their own positions
            assert np.array_equal(row_x, tokens[s : s + T]) and np.array_equal(row_y, tokens[s + 1 : s + T + 1])


def test_every_window_once_per_epoch_across_ranks(reader):
    seen = []
    for rank in range(3):
        node = BatchNode(WindowNode(reader, seq_len=T, seed=1, rank=rank, world_size=3), B)
        seen += [int(r[0]) for x, _ in nodes.Loader(node) for r in x]
    n_windows = reader.n_tokens // (T + 1)
    assert len(seen) == len(set(seen)) and len(seen) > n_windows - 3 * B
    assert all(s % (T + 1) == 0 for s in seen)


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
def test_resume_batch_node(reader, mode):
    def make():
        return BatchNode(WindowNode(reader, seq_len=T, seed=5, mode=mode), B)

    n = check_node_resume(make, [1, 7, 50])
    assert n > 60


def test_node_state_is_streamtok_json_inside_torchdata_state(reader):
    loader = nodes.Loader(nodes.Prefetcher(BatchNode(WindowNode(reader, seq_len=T), B), 2))
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    text = json.dumps(state)  # the whole pipeline's state is JSON here
    assert '"streamtok_node": 1' in text and len(text) < 2000
    inner = json.loads(text)
    found = []

    def walk(d):
        if isinstance(d, dict):
            if "streamtok_node" in d:
                found.append(d)
            for v in d.values():
                walk(v)

    walk(inner)
    assert found and found[-1]["position"]["offset"] == 5 * B


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda n: nodes.Prefetcher(n, 2), id="Prefetcher"),
        pytest.param(lambda n: nodes.Mapper(n, lambda b: (b[0] * 2, b[1])), id="Mapper"),
        pytest.param(lambda n: nodes.ParallelMapper(n, lambda b: (b[0] + 1, b[1]), num_workers=2, method="thread"), id="ParallelMapper-threads"),
        pytest.param(lambda n: nodes.Prefetcher(nodes.ParallelMapper(n, lambda b: b, num_workers=2, method="thread"), 3), id="ParallelMapper+Prefetcher"),
    ],
)
def test_composes_with_torchdata_nodes(reader, wrap):
    def make():
        return wrap(BatchNode(WindowNode(reader, seq_len=T, seed=2), B))

    check_node_resume(make, [3, 40])


def test_torchdata_batcher_and_threads_gather_the_same_batches(reader):
    """WindowNode -> torchdata's Batcher -> a threaded mapper gathering each batch."""
    gather = streamtok.Collator(reader, seq_len=T)
    ours = [_key(b) for b in nodes.Loader(BatchNode(WindowNode(reader, seq_len=T, seed=4), B))]
    theirs = nodes.ParallelMapper(nodes.Batcher(WindowNode(reader, seq_len=T, seed=4), B, drop_last=True), gather, num_workers=2, method="thread")
    assert [_key(b) for b in nodes.Loader(theirs)] == ours


def _weighted_pair(tmp_path, stop_criteria: str) -> Callable[[], nodes.BaseNode]:
    """torchdata's MultiNodeWeightedSampler over two streamtok sources (tokens of b from 100,000)."""
    make_shards(tmp_path / "a", [4000])
    make_shards(tmp_path / "b", [3000], start=100_000)
    readers = {name: streamtok.MemmapReader(tmp_path / name) for name in "ab"}

    def make():
        sources = {name: BatchNode(WindowNode(r, seq_len=T, seed=9), B) for name, r in readers.items()}
        return nodes.MultiNodeWeightedSampler(sources, {"a": 0.7, "b": 0.3}, seed=1, rank=0, world_size=1, stop_criteria=stop_criteria)

    return make


def test_multi_node_weighted_sampler_over_two_streamtok_sources(tmp_path):
    make = _weighted_pair(tmp_path, "ALL_DATASETS_EXHAUSTED")
    items = list(nodes.Loader(make()))
    from_b = sum(int(x[0, 0]) >= 100_000 for x, _ in items)
    assert 0 < from_b < len(items)
    check_node_resume(make, [5, 20])


def test_split_node_moves_compact_buffers_and_splits(reader):
    plain = [_key(b) for b in nodes.Loader(BatchNode(WindowNode(reader, seq_len=T, seed=6), B))]
    compact = BatchNode(WindowNode(reader, seq_len=T, seed=6), B, compact=True)
    first = next(iter(nodes.Loader(BatchNode(WindowNode(reader, seq_len=T, seed=6), B, compact=True))))
    assert first.dtype == torch.int32 and first.shape == (B, T + 1)  # uint32 shards travel as int32
    assert [_key(b) for b in nodes.Loader(SplitNode(nodes.Prefetcher(compact, 2), "cpu"))] == plain


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nodes.PinMemory needs CUDA")
def test_pin_memory_composition_from_the_issue(reader):  # pragma: no cover - needs a GPU
    def make():
        return nodes.PinMemory(nodes.Prefetcher(BatchNode(WindowNode(reader, seq_len=T, seed=0), B, compact=True), 2))

    first = next(iter(nodes.Loader(make())))
    assert first.is_pinned()
    check_node_resume(make, [4])


def test_bad_settings_and_foreign_states_are_refused(reader):
    with pytest.raises(ConfigError, match="seq_len"):
        WindowNode(reader)
    with pytest.raises(ConfigError, match="MemmapReader or a WindowSampler"):
        WindowNode([1, 2, 3], seq_len=T)
    with pytest.raises(ConfigError, match="batch_size"):
        BatchNode(WindowNode(reader, seq_len=T), 0)
    node = WindowNode(reader, seq_len=T)
    with pytest.raises(StateMismatchError, match="streamtok_node"):
        node.reset({"position": {}})
    other = WindowNode(reader, seq_len=T + 1)
    state = node.state_dict()
    with pytest.raises(StateMismatchError, match="seq_len"):
        other.reset(state)


def test_resume_in_a_new_process(tmp_path, reader):
    """The issue's pipeline: state saved as JSON in one process, resumed in a fresh one."""
    script = textwrap.dedent(
        f"""
        import hashlib, json, sys
        import streamtok
        from torchdata import nodes
        from streamtok.nodes import BatchNode, WindowNode
        reader = streamtok.MemmapReader({str(tmp_path / "d")!r})
        loader = nodes.Loader(nodes.Prefetcher(BatchNode(WindowNode(reader, seq_len={T}, seed=0), {B}), 2))
        if sys.argv[1] == "resume":
            loader.load_state_dict(json.load(open(sys.argv[2])))
        out = []
        for i, (x, y) in enumerate(loader):
            out.append(hashlib.sha1(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest())
            if sys.argv[1] == "save" and i + 1 == 9:
                json.dump(loader.state_dict(), open(sys.argv[2], "w"))
                break
        print(json.dumps(out))
        """
    )
    path = tmp_path / "run.py"
    path.write_text(script)
    state = tmp_path / "state.json"

    def run(*args: str) -> list[str]:
        done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    full = run("full", "-")
    head = run("save", str(state))
    tail = run("resume", str(state))
    assert len(head) == 9 and head + tail == full


_COMPOSITIONS = {
    "WindowNode": lambda r, m: WindowNode(r, seq_len=T, seed=2, mode=m),
    "BatchNode": lambda r, m: BatchNode(WindowNode(r, seq_len=T, seed=2, mode=m), B),
    "Mapper(BatchNode)": lambda r, m: nodes.Mapper(BatchNode(WindowNode(r, seq_len=T, seed=2, mode=m), B), lambda b: b),
    "Batcher(WindowNode)": lambda r, m: nodes.Batcher(WindowNode(r, seq_len=T, seed=2, mode=m), B),
    "SplitNode": lambda r, m: SplitNode(BatchNode(WindowNode(r, seq_len=T, seed=2, mode=m), B, compact=True)),
    "Prefetcher(BatchNode)": lambda r, m: nodes.Prefetcher(BatchNode(WindowNode(r, seq_len=T, seed=2, mode=m), B), 2),
    "ParallelMapper(BatchNode)": lambda r, m: nodes.ParallelMapper(
        BatchNode(WindowNode(r, seq_len=T, seed=2, mode=m), B), lambda b: b, num_workers=2, method="thread"
    ),
}


@pytest.mark.parametrize("mode", ["shuffle", "random"])
@pytest.mark.parametrize("name", list(_COMPOSITIONS))
def test_torchdata_save_load_rules(reader, name, mode):
    check_torchdata_save_load(lambda: _COMPOSITIONS[name](reader, mode), midpoint=5)


def test_torchdata_save_load_rules_for_a_weighted_mix_of_sources(tmp_path):
    check_torchdata_save_load(_weighted_pair(tmp_path, "FIRST_DATASET_EXHAUSTED"), midpoint=4)
