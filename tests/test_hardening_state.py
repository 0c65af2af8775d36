"""The state is always exact or refused, and StatefulDataLoader's conventions hold."""

from __future__ import annotations

import copy
import io
import json
import warnings

import numpy as np
import pytest
import torch
from _util import batch_hash, make_shards
from torchdata.stateful_dataloader import StatefulDataLoader

import streamtok
from streamtok import ConfigError, PassActiveError, StateMismatchError


@pytest.fixture
def data(tmp_path):
    make_shards(tmp_path / "d", [4000, 3000])
    return tmp_path / "d"


def _loader(data, **kw):
    base = dict(seq_len=32, batch_size=4, split="all", seed=3, epochs=2, metrics=False)
    return streamtok.loader(data, **{**base, **kw})


def _after_last_batch(loader, see_the_end: bool) -> dict:
    """The state after the last batch of a pass: before the loop saw StopIteration, or after."""
    it = iter(loader)
    for _ in range(len(loader)):
        next(it)
    if see_the_end:
        assert next(it, None) is None
    state = loader.state_dict()
    getattr(it, "close", lambda: None)()  # a streamtok pass ends; a DataLoader iterator has no close
    return state


@pytest.mark.parametrize("see_the_end", [False, True], ids=["checkpoint-in-loop", "checkpoint-after-loop"])
def test_resuming_after_the_last_batch_follows_stateful_dataloader(data, see_the_end):
    def sdl():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return StatefulDataLoader(list(range(10)), batch_size=2)

    # torchdata's own loader, the convention users come from:
    theirs = sdl()
    theirs.load_state_dict(_after_last_batch(sdl(), see_the_end))
    their_passes = [len(list(theirs)), len(list(theirs))]
    assert their_passes == ([5, 5] if see_the_end else [0, 5])
    # streamtok, the same way:
    full = [batch_hash(*b) for b in _loader(data)]
    ours = _loader(data)
    ours.load_state_dict(json.loads(json.dumps(_after_last_batch(_loader(data), see_the_end))))
    first, second = [batch_hash(*b) for b in ours], [batch_hash(*b) for b in ours]
    assert [len(first) // len(full), len(second) // len(full)] == [p // 5 for p in their_passes]
    assert second and second != full  # the next epochs, in a new order


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("see_the_end", [False, True], ids=["checkpoint-in-loop", "checkpoint-after-loop"])
def test_the_prefetcher_reports_the_end_of_a_pass_the_same_way(data, see_the_end, workers):
    one_pass = len(list(_loader(data)))
    batches = streamtok.CUDAPrefetcher(_loader(data, num_workers=workers), "cpu")
    state = _after_last_batch(batches, see_the_end)
    resumed = streamtok.CUDAPrefetcher(_loader(data), "cpu")
    resumed.load_state_dict(state)
    assert [len(list(resumed)), len(list(resumed))] == ([one_pass, one_pass] if see_the_end else [0, one_pass])


def test_load_state_dict_during_a_pass_is_refused_then_works_once_closed(data):
    ref = [batch_hash(*b) for b in _loader(data)]
    loader = _loader(data)
    it = iter(loader)
    head = [batch_hash(*next(it)) for _ in range(5)]
    state = loader.state_dict()
    with pytest.raises(PassActiveError, match="still running"):
        loader.load_state_dict(state)
    it.close()
    loader.load_state_dict(state)
    assert head + [batch_hash(*b) for b in loader] == ref


def test_a_newer_pass_stops_the_older_iterator_from_moving_the_position(data):
    loader = _loader(data, epochs=None)
    old = iter(loader)
    next(old)
    new = iter(loader)
    first_new = batch_hash(*next(new))
    position = loader.state_dict()
    assert list(old) == []  # superseded: yields nothing more...
    assert loader.state_dict() == position  # ...and never advanced the position
    fresh = _loader(data, epochs=None)
    fresh.load_state_dict(position)
    it = iter(fresh)
    assert batch_hash(*next(new)) == batch_hash(*next(it))
    assert first_new


def _good_state(data) -> dict:
    loader = _loader(data)
    it = iter(loader)
    for _ in range(3):
        next(it)
    it.close()
    return loader.state_dict()


CORRUPT = [
    ("not a dict", lambda s: [1, 2], "not a streamtok loader state"),
    ("no sampler", lambda s: {"streamtok": 1}, "'sampler'"),
    ("sampler a list", lambda s: {**s, "sampler": []}, "not a dict"),
    ("missing epoch", lambda s: _drop(s, "epoch"), "'epoch'"),
    ("missing offset", lambda s: _drop(s, "offset"), "'offset'"),
    ("missing end_epoch", lambda s: _drop(s, "end_epoch"), "'end_epoch'"),
    ("missing config", lambda s: _drop(s, "config"), "'config'"),
    ("missing config key", lambda s: _set(s, "config", {k: v for k, v in s["sampler"]["config"].items() if k != "seed"}), "'seed'"),
    ("epoch a string", lambda s: _set(s, "epoch", "1"), "'epoch'"),
    ("epoch a float", lambda s: _set(s, "epoch", 1.0), "'epoch'"),
    ("epoch a bool", lambda s: _set(s, "epoch", True), "'epoch'"),
    ("negative epoch", lambda s: _set(s, "epoch", -1), "'epoch'"),
    ("absurd epoch", lambda s: _set(s, "epoch", 10**30), "'epoch'"),
    ("negative offset", lambda s: _set(s, "offset", -4), "'offset'"),
    ("offset past the epoch", lambda s: _set(s, "offset", 10**9), "'offset'"),
    ("end_epoch -5", lambda s: _set(s, "end_epoch", -5), "'end_epoch'"),
    ("end_epoch a string", lambda s: _set(s, "end_epoch", "2"), "'end_epoch'"),
    ("end before position", lambda s: _set(_set(s, "epoch", 4), "end_epoch", 2), "'end_epoch'"),
    ("version 9", lambda s: _set(s, "version", 9), "version"),
    ("seed another type", lambda s: _set(s, "config", {**s["sampler"]["config"], "seed": "3"}), "'seed'"),
    ("batch_size None", lambda s: _set(s, "batch_size", None), "'batch_size'"),
]


def _set(state: dict, key: str, value) -> dict:
    state = copy.deepcopy(state)
    state["sampler"][key] = value
    return state


def _drop(state: dict, key: str) -> dict:
    state = copy.deepcopy(state)
    del state["sampler"][key]
    return state


@pytest.mark.parametrize("name, corrupt, message", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_states_are_refused_naming_the_key(data, name, corrupt, message):
    state = _good_state(data)
    loader = _loader(data)
    before = loader.state_dict()
    with pytest.raises(StateMismatchError, match=message):
        loader.load_state_dict(corrupt(state))
    assert loader.state_dict() == before  # nothing half-applied


def test_numpy_integer_settings_become_builtins(data):
    loader = _loader(data, epochs=np.int64(2), rank=np.int32(0), world_size=np.int64(1), seed=np.uint8(3), batch_size=np.int64(4))
    state = loader.state_dict()
    json.dumps(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == state
    assert all(type(v) is int for v in (state["sampler"]["batch_size"], state["sampler"]["end_epoch"], state["sampler"]["rank"]))
    with pytest.raises(ConfigError, match="epochs must be an integer"):
        _loader(data, epochs=2.5)


def test_stateful_dataloader_options_that_mean_what_streamtok_does(data):
    loader = _loader(data, num_workers=1, in_order=True, drop_last=True, snapshot_every_n_steps=1)
    assert loader.batch_size == 4 and loader.drop_last is True
    assert len(list(loader)) == len(list(_loader(data)))
    for bad, why in [({"in_order": False}, "in order"), ({"drop_last": False}, "partial last step"), ({"snapshot_every_n_steps": 0}, "positive")]:
        with pytest.raises(ConfigError, match=why):
            _loader(data, **bad)


@pytest.mark.parametrize("context", [None, "spawn"])
def test_persistent_workers_keep_their_processes_and_the_stream(data, context):
    kw = dict(epochs=1, mode="shuffle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_loader = _loader(data, **kw)
        ref = [[batch_hash(*b) for b in ref_loader] for _ in range(3)]
        extra = {"multiprocessing_context": context} if context else {}
        loader = _loader(data, num_workers=2, persistent_workers=True, **kw, **extra)
        first = [batch_hash(*b) for b in loader]
        pids = {w.pid for w in loader._iterator._workers}
        partial = []
        for b in loader:  # an abandoned pass: the next one still starts a whole new epoch
            partial.append(batch_hash(*b))
            if len(partial) == 3:
                break
        third = [batch_hash(*b) for b in loader]
        assert {w.pid for w in loader._iterator._workers} == pids  # no restart
    assert first == ref[0] and partial == ref[1][:3] and third == ref[2]
    resumed = _loader(data, num_workers=2, persistent_workers=True, **kw)
    it = iter(resumed)
    next(it)
    it.close()
    state = resumed.state_dict()
    again = _loader(data, num_workers=2, persistent_workers=True, **kw)
    again.load_state_dict(state)
    assert [batch_hash(*b) for b in again] == ref[0][1:]
