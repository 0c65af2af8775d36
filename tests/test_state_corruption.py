"""Every sampler's state is exact or refused: a corrupt one raises StateMismatchError and changes nothing.

For each kind of loader (plain windows, ``mask``, ``bos``, ``pack``, a mixture) a good state is
taken after 3 batches; then each corruption is loaded into a loader standing at that state.
It must be refused, the loader's ``state_dict()`` must be the same afterwards, and its next
batches the same as those of a loader that never saw the corrupt state. Two tables: the
corruptions the issue names (each checked alone, batches included), and every key of every
level of each kind's state dropped, retyped (bool, str, float, inf, NaN, huge, negative,
nested), or joined by an extra key (checked in sequence on one loader, batches at the end).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _util import make_doc_shards, make_shards, roundtrip

import streamtok
from streamtok import StateMismatchError

KINDS = ["stream", "mask", "bos", "pack", "mixture"]
T, B = 16, 4


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    docs = tmp_path_factory.mktemp("docs")
    make_doc_shards(docs, n_shards=2, docs=80, median=10)
    mix = tmp_path_factory.mktemp("mix")
    for s, (name, lengths) in enumerate({"web": [3000, 2001], "code": [1500], "math": [400]}.items()):
        make_shards(mix / name, lengths, start=1_000_000 * (s + 1))
    return {"docs": docs, "mix": {n: mix / n for n in ("web", "code", "math")}}


def build(dirs, kind: str):
    kw = dict(seq_len=T, batch_size=B, split="all", seed=4, epochs=2, metrics=False)
    if kind == "mixture":
        return streamtok.loader(dirs["mix"], weights={"web": 0.6, "code": 0.3, "math": 0.1}, primary="web", **kw)
    if kind == "pack":
        kw["block_docs"] = 30
    return streamtok.loader(dirs["docs"], documents=kind, **kw)


def digest(batch) -> str:
    h = hashlib.sha1()
    for t in batch[:2]:  # x and y (the documents' metadata follows from them)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def next_batches(loader, n: int = 2) -> list[str]:
    it = iter(loader)
    out = [digest(next(it)) for _ in range(n)]
    it.close()
    return out


@pytest.fixture(scope="module")
def cases(dirs):
    """Per kind: (a loader standing at the good state, the good state, the next batches from it)."""
    out = {}
    for kind in KINDS:
        first = build(dirs, kind)
        it = iter(first)
        for _ in range(3):
            next(it)
        it.close()
        good = roundtrip(first.state_dict())
        loader = build(dirs, kind)
        loader.load_state_dict(good)
        out[kind] = (loader, good, next_batches(loader))
        loader.load_state_dict(good)
    return out


def refused(loader, good: dict, bad: Any, match: str | None = None) -> None:
    """``bad`` is refused and changes nothing the state shows."""
    with pytest.raises(StateMismatchError, match=match):
        loader.load_state_dict(bad)
    assert loader.state_dict() == good, "a refused state changed the position"


def _set(path: tuple, value: Any) -> Callable[[dict], dict]:
    def corrupt(sampler: dict) -> dict:
        node = sampler
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return sampler
    return corrupt


def _drop(path: tuple) -> Callable[[dict], dict]:
    def corrupt(sampler: dict) -> dict:
        node = sampler
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return sampler
    return corrupt


# The corruptions the issue names, and the kinds they apply to.
NAMED: list[tuple[str, str, Callable[[dict], dict], str]] = [
    ("mixture", "negative source count", _set(("sources", "web", "windows"), -1), "'windows'"),
    ("mixture", "sources given as a list", lambda s: {**s, "sources": list(s["sources"].values())}, "'sources'.*not a dict"),
    ("mixture", "negative windows", _set(("windows",), -8), "'windows'"),
    ("mixture", "step as a string", _set(("step",), "5"), "'step'"),
    ("mixture", "step as a float", _set(("step",), 5.9), "'step'"),
    ("mixture", "step_samples 0", _set(("step_samples",), 0), "'step_samples'"),
    ("mixture", "a count of 10**30", _set(("sources", "code", "windows"), 10**30), "'windows'"),
    ("mixture", "a NaN target", _set(("anchor", "targets", "web"), float("nan")), "'web'"),
    ("mixture", "an infinite target", _set(("anchor", "targets", "math"), float("inf")), "'math'"),
    ("mixture", "no anchor", _drop(("anchor",)), "'anchor'"),
    # (a count above the windows taken is a position: a new pass moves each source to its next epoch start)
    ("mixture", "a count past any position", _set(("sources", "web", "windows"), 2**60), "out of range"),
    ("mixture", "a source's data changed", _set(("sources", "web", "data"), "0" * 16), "'web' holds other data"),
    ("mixture", "step beyond windows", _set(("step",), 10**7), "step="),
    ("mixture", "anchor after the position", _set(("anchor", "step"), 10**6), "'step'"),
    ("mixture", "a target past any position", _set(("anchor", "targets", "web"), 1e300), "'web'"),
    ("mixture", "schedule not a list", _set(("schedule",), {"web": 1}), "'schedule'"),
    ("mixture", "kind missing", _drop(("kind",)), "not a mixture state"),
    ("pack", "epoch as a string", _set(("epoch",), "0"), "'epoch'"),
    ("pack", "offset -7", _set(("offset",), -7), "'offset'"),
    ("pack", "epoch 10**30", _set(("epoch",), 10**30), "'epoch'"),
    ("pack", "row 1.5", _set(("row",), 1.5), "'row'"),
    ("pack", "row past its block", _set(("row",), 200), "out of range"),
    ("pack", "block past the epoch", _set(("block",), 10**6), "'block'"),
    ("pack", "no config", _drop(("config",)), "'config'"),
    ("pack", "config a list", _set(("config",), ["pack"]), "'config'.*not a dict"),
    ("pack", "config a string", _set(("config",), "pack"), "'config'.*not a dict"),
    ("pack", "config without block_docs", _drop(("config", "block_docs")), "'block_docs'"),
    ("bos", "end_epoch before the epoch", lambda s: {**s, "epoch": 5, "end_epoch": 3}, "'end_epoch'"),
    ("bos", "epoch a bool", _set(("epoch",), True), "'epoch'"),
    ("bos", "pass_ended a string", _set(("pass_ended",), "yes"), "'pass_ended'"),
    ("mask", "offset infinite", _set(("offset",), float("inf")), "'offset'"),
    ("mask", "rank outside the world", _set(("rank",), 3), "'rank'"),
    ("stream", "an extra key", lambda s: {**s, "block": 0}, "unexpected key"),
    ("stream", "a config key extra", lambda s: {**s, "config": {**s["config"], "documents": "bos"}}, "documents='bos'"),
]


@pytest.mark.parametrize("kind, name, corrupt, match", NAMED, ids=[f"{k}-{n}" for k, n, _, _ in NAMED])
def test_named_corruptions_are_refused_and_change_nothing(cases, kind, name, corrupt, match):
    loader, good, after = cases[kind]
    bad = {"streamtok": good["streamtok"], "sampler": corrupt(copy.deepcopy(good["sampler"]))}
    refused(loader, good, json.loads(json.dumps(bad)) if name != "a NaN target" else bad, match)
    assert next_batches(loader) == after  # the same batches as a loader that never saw it
    loader.load_state_dict(good)


# -- every key of every level ----------------------------------------------------------------
BAD_INTS = [True, "5", 5.9, float("inf"), float("nan"), -7, 10**30, [5], {"v": 5}]
BAD_FLOATS = [float("nan"), float("inf"), -1.0, "1.0", True, 1e300, None]
BAD_STRS = [5, "", ["x"]]
BAD_BOOLS = ["yes", 1, None]
BAD_NONES = ["x", -7, 1.5, True]
OPTIONAL = {"rank", "pass_ended", "max_epochs", "cap_from"}  # absent from older states; dropping them is valid
OPTIONAL_AT_ANY_LEVEL = {"boundary"}  # the boundary token, absent from older states: then not checked
NULLABLE = {"primary"}  # None is a valid value


def _nodes(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, obj
    if isinstance(obj, dict) and path != ("schedule",):  # another schedule is a re-weighting, valid
        for key, value in obj.items():
            yield from _nodes(value, path + (key,))


def corruptions(sampler: dict) -> Iterator[tuple[str, Callable[[dict], dict]]]:
    """Every key dropped, retyped or joined by an extra one, at every level of ``sampler``."""
    for path, value in _nodes(sampler):
        name = "/".join(map(str, path)) or "<root>"
        if path == ("schedule",):
            yield f"{name} a dict", _set(path, {"0": 1})
            continue
        if isinstance(value, dict):
            yield f"{name} + extra key", _set(path + ("zz_extra",), 0) if path else (lambda s: {**s, "zz_extra": 0})
            if path:
                yield f"{name} as a list", _set(path, list(value.values()))
            for key in value:
                if not (path == () and key in OPTIONAL) and key not in OPTIONAL_AT_ANY_LEVEL:
                    yield f"{name}/{key} dropped", _drop(path + (key,))
            continue
        if isinstance(value, bool):
            bad = BAD_BOOLS
        elif isinstance(value, int):
            bad = BAD_INTS
        elif isinstance(value, float):
            bad = BAD_FLOATS
        elif isinstance(value, str):
            bad = BAD_STRS + ([] if path[-1] in NULLABLE else [None])
        elif value is None:
            bad = BAD_NONES
        else:
            continue
        for v in bad:
            yield f"{name}={v!r}", _set(path, v)


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_dropped_retyped_or_joined_is_refused(cases, kind):
    loader, good, after = cases[kind]
    accepted, changed, n = [], [], 0
    for name, corrupt in corruptions(good["sampler"]):
        n += 1
        bad = {"streamtok": 1, "sampler": corrupt(copy.deepcopy(good["sampler"]))}
        try:
            loader.load_state_dict(bad)
        except StateMismatchError:
            pass
        else:
            accepted.append(name)
            loader.load_state_dict(good)
        if loader.state_dict() != good:
            changed.append(name)
            loader.load_state_dict(good)
    assert not accepted, f"accepted {len(accepted)} of {n} corrupt {kind} states: {accepted}"
    assert not changed, f"refused but changed the position: {changed}"
    assert n > 40
    assert next_batches(loader) == after  # no refused state left anything behind
    loader.load_state_dict(good)


def test_the_loader_envelope_is_checked(cases):
    loader, good, after = cases["stream"]
    for bad in ([good], None, {"streamtok": True, "sampler": good["sampler"]}, {"streamtok": "1", "sampler": good["sampler"]},
                {"streamtok": 1}, {**good, "extra": 0}, {"streamtok": 1, "sampler": None}):
        refused(loader, good, bad)
    assert next_batches(loader) == after
    loader.load_state_dict(good)


@pytest.mark.parametrize("saved", KINDS)
def test_a_state_of_another_kind_is_refused(cases, saved):
    """A bos state into a mask or stream loader, a pack state into bos, a mixture's anywhere..."""
    for kind in KINDS:
        if kind == saved or {kind, saved} == {"stream", "mask"}:  # mask reads the stream's windows: one state
            continue
        loader, good, _ = cases[kind]
        refused(loader, good, cases[saved][1])


def test_the_prefetcher_refuses_and_keeps_its_state(cases):
    loader, good, after = cases["pack"]
    pf = streamtok.CUDAPrefetcher(loader, device="cpu")
    bad = {"streamtok": 1, "sampler": {**good["sampler"], "row": 1.5}}
    with pytest.raises(StateMismatchError, match="'row'"):
        pf.load_state_dict(bad)
    assert pf.state_dict() == good
    it = iter(pf)
    assert [digest(next(it)) for _ in range(2)] == after
    it.close()
    loader.load_state_dict(good)


def test_nan_survives_no_json_but_is_refused_as_python(cases):
    """``json.dumps`` writes NaN as a bare token that ``json.loads`` reads back: refused either way."""
    loader, good, _ = cases["mixture"]
    sampler = copy.deepcopy(good["sampler"])
    sampler["anchor"]["targets"]["code"] = math.nan
    refused(loader, good, json.loads(json.dumps({"streamtok": 1, "sampler": sampler})), "'code'")


def test_tampered_nodes_states_are_refused_before_anything_changes(dirs):
    """``streamtok.nodes``: an envelope or position that is not the node's raises StateMismatchError, not KeyError."""
    from streamtok.nodes import BatchNode, SplitNode, WindowNode

    reader = streamtok.ShardLister(dirs["docs"]).memmap()
    node = SplitNode(BatchNode(WindowNode(reader, seq_len=T, seed=1), B, compact=True))
    node.reset()
    for _ in range(3):
        next(node)
    good = json.loads(json.dumps(node.state_dict()))
    after = [digest(next(node)) for _ in range(2)]
    node.reset(good)
    inner = good["source"]["source"]
    position = inner["position"]
    bad_states = [
        {}, {"source": None}, {"source": {}}, {"source": {"source": {}}},
        {"source": {"source": {"position": position}}},  # no version key
        {"source": {"source": {**inner, "streamtok_node": True}}},
        {"source": {"source": {**inner, "streamtok_node": "1"}}},
        {"source": {"source": {**inner, "extra": 0}}},
        {"source": {"source": {"streamtok_node": 1}}},
        {"source": {"source": {**inner, "position": [position]}}},
        {"source": {"source": {**inner, "position": {**position, "epoch": "0"}}}},
        {"source": {"source": {**inner, "position": {**position, "offset": -7}}}},
        {"source": {"source": {**inner, "position": {k: v for k, v in position.items() if k != "config"}}}},
    ]
    for bad in bad_states:
        with pytest.raises(StateMismatchError):
            node.reset(bad)
        assert node.state_dict() == good, bad
    assert [digest(next(node)) for _ in range(2)] == after
