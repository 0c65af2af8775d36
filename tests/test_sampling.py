"""The one sampler contract: a new sampler is its order math; pass logic and settings checks are shared."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _util import batch_hash, check_resume, make_shards, roundtrip

from streamtok import Collator, ConfigError, MemmapReader, StateMismatchError, StreamtokLoader
from streamtok.sampler import EpochSampler

T, B = 8, 4


class Strided(EpochSampler):
    """A new sampler, nothing but its order math: epoch ``e`` reads every window of ``T+1``
    tokens once, sample ``k`` at window ``(k * stride_e + e) mod n``, a stride coprime to ``n``."""

    MODES = ("strided",)

    def __init__(self, source: MemmapReader, seq_len: int, **kw):
        self.source = source
        self.configure(seq_len=seq_len, mode="strided", **kw)
        self.n_samples = source.n_tokens // self.window_len
        self.require_step(source.describe())
        self.start_at_zero()

    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        stride = 1 + (self.seed + 7 * epoch) % (self.n_samples - 1)
        while math.gcd(stride, self.n_samples) != 1:
            stride += 1
        return (np.asarray(samples) * stride + epoch) % self.n_samples * self.window_len

    def config(self) -> dict:
        return {"mode": self.mode, "seed": self.seed, "seq_len": self.seq_len, "data": self.source.fingerprint}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    make_shards(root, [300, 350])  # 650 tokens: 72 windows of 9, 4 full steps of 16 per epoch (world 1)
    return root


def _loader(data, workers=0, **kw):
    opts = {"seed": 5, "epochs": 1, "batch_size": B, **kw}
    return StreamtokLoader(Collator(Strided(MemmapReader(data), T, **opts)), num_workers=workers, metrics=False)


def test_a_new_sampler_runs_through_the_loader_and_reads_each_window_once_per_epoch(data):
    loader = _loader(data, epochs=2)
    firsts = [int(x[r, 0]) for x, _ in loader for r in range(B)]
    n, steps = 650 // (T + 1), (650 // (T + 1)) // B
    assert len(loader) == 2 * steps and len(firsts) == 2 * steps * B
    for e in range(2):  # each epoch: distinct windows, all aligned to the window grid
        got = firsts[e * steps * B : (e + 1) * steps * B]
        assert len(set(got)) == len(got) and all(v % (T + 1) == 0 and v // (T + 1) < n for v in got)
    assert firsts[: steps * B] != firsts[steps * B :]  # another order in the next epoch


def test_a_new_sampler_gives_the_same_stream_under_any_num_workers(data):
    ref = [batch_hash(*b) for b in _loader(data, epochs=2)]
    assert [batch_hash(*b) for b in _loader(data, workers=2, epochs=2)] == ref


@pytest.mark.parametrize("workers, passes", [(0, 2), (2, 1)])
def test_a_new_sampler_resumes_exactly(data, workers, passes):
    assert check_resume(lambda: _loader(data, workers=workers), [1, 3], passes=passes) == 650 // (T + 1) // B


def test_a_new_sampler_resumes_elastically_and_checks_its_state(data):
    two = [_loader(data, rank=r, world_size=2, batch_size=2) for r in range(2)]
    its = [iter(ld) for ld in two]
    seen = [[int(v) for v in next(it)[0][:, 0]] for it in its for _ in range(1)]
    state = roundtrip(two[0].state_dict())
    one = _loader(data, batch_size=4)
    one.load_state_dict(state)
    rest = [int(v) for x, _ in one for v in x[:, 0]]
    full = [int(v) for x, _ in _loader(data, batch_size=4) for v in x[:, 0]]
    assert seen[0] + seen[1] == full[:4] and rest == full[4:]  # the step both ranks took is not repeated
    with pytest.raises(StateMismatchError, match="seed"):
        _loader(data, seed=6).load_state_dict(state)


def _all_samplers(tmp_path):
    """A factory per sampler kind, each taking the shared settings."""
    from streamtok import WindowSampler
    from streamtok._formats import write_shard
    from streamtok.documents.index import DocumentIndex
    from streamtok.documents.pack import PackSampler
    from streamtok.documents.samplers import DocStartSampler
    from streamtok.mixture.sampler import MixtureSampler

    make_shards(tmp_path / "w", [4000])
    docs = np.zeros(4000, dtype=np.uint16)
    docs[::10] = 7  # a document every 10 tokens
    (tmp_path / "d").mkdir()
    write_shard(tmp_path / "d" / "docs.bin", docs)
    window, doc_reader = MemmapReader(tmp_path / "w"), MemmapReader(tmp_path / "d")
    index = DocumentIndex(doc_reader, 7)
    return {
        "window": lambda **kw: WindowSampler(window, **kw),
        "bos": lambda **kw: DocStartSampler(doc_reader, index=index, **kw),
        "pack": lambda **kw: PackSampler(doc_reader, index=index, **kw),
        "mixture": lambda **kw: MixtureSampler({"a": window, "b": doc_reader}, {"a": 1, "b": 1}, **kw),
    }


BAD = [
    ({"seq_len": 2.5}, "seq_len must be an integer"),
    ({"seq_len": 0}, "seq_len must be at least 1"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"seed": "1"}, "seed must be an integer"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"mode": "bogus"}, "mode must be one of"),
    ({"rank": 2, "world_size": 2}, r"rank 2 is not in \[0, world_size=2\)"),
]


@pytest.mark.parametrize("kind", ["window", "bos", "pack", "mixture"])
def test_every_sampler_checks_the_shared_settings_alike(tmp_path, kind):
    make = _all_samplers(tmp_path)[kind]
    base = {"seq_len": T, "batch_size": 2, "rank": 0, "world_size": 1, "seed": 0, "epochs": 1}
    if kind == "mixture":
        base["primary"] = "a"
    make(**base)  # the good settings build
    for bad, message in BAD:
        with pytest.raises(ConfigError, match=message):
            make(**{**base, **bad})
