"""Repetition caps (``max_epochs={name: x}``): exact windows, the share handed on, passes, resume, bad input."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import numpy as np
import pytest
from _util import ROOT, batch_hash, check_resume, make_shards, readers_of, roundtrip, take
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamtok
from streamtok import ConfigError, StateMismatchError
from streamtok.mixture.sampler import MixtureSampler

T = 8
BASE = 1_000_000  # source s holds tokens BASE * (s + 1) + position: a row names its source and start
SIZES = {"web": [3000, 2001], "code": [1500], "math": [400]}
NAMES = list(SIZES)
WEIGHTS = {"web": 0.2, "code": 0.3, "math": 0.5}


@pytest.fixture(scope="module")
def mix_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("caps")
    dirs = {}
    for s, (name, lengths) in enumerate(SIZES.items()):
        make_shards(root / name, lengths, start=BASE * (s + 1))
        dirs[name] = root / name
    return dirs


def _loader(dirs, max_epochs=None, weights=None, **kw):
    opts = dict(seq_len=T, batch_size=4, split="all", mode="shuffle", seed=3, epochs=None, metrics=False)
    opts.update(kw)
    return streamtok.loader(dict(dirs), weights=weights or WEIGHTS, max_epochs=max_epochs, **opts)


def _rows(x) -> list[tuple[str, int]]:
    return [(NAMES[int(v) // BASE - 1], int(v) % BASE) for v in x[:, 0].tolist()]


def _run(ld, steps):
    """Rows and per-source counts after each of ``steps`` batches (fewer if the loader ends)."""
    rows, counts = [], []
    for x, _ in ld:
        rows.append(_rows(x))
        counts.append(dict(ld.windows_by_source()))
        if len(rows) == steps:
            break
    return rows, counts


def _own_order(ld, name, n):
    """The first ``n`` windows of source ``name``'s own order (its WindowSampler, epoch after epoch)."""
    sampler = ld.collator.source
    own = sampler.samplers[sampler.names.index(name)]
    k = np.arange(n)
    return sorted(int(own.starts(int(e), np.array([i]))[0]) for e, i in zip(k // own.n_samples, k % own.n_samples))


# -- exactly its windows of x epochs, then its share to the others --------------------------------------------
@pytest.mark.parametrize("mode", ["shuffle", "sequential"])
@pytest.mark.parametrize("x", [1, 2, 1.5, 0.25])
def test_a_capped_source_gives_exactly_its_windows_of_x_epochs(mix_dirs, mode, x):
    ld = _loader(mix_dirs, {"math": x}, mode=mode)
    n = ld.collator.source.sizes[NAMES.index("math")]
    cap = math.floor(x * n)
    rows, _ = _run(ld, 150)
    math_rows = sorted(s for step in rows for name, s in step if name == "math")
    assert len(math_rows) == cap  # not one window more, none fewer
    assert math_rows == _own_order(ld, "math", cap)  # its own order: each window once per whole epoch
    assert ld.windows_by_source()["math"] == cap
    assert ld.epochs_by_source()["math"] == cap / n
    assert all(len(step) == 4 for step in rows)  # every step full: the others took the share


def test_before_the_cap_bites_the_stream_is_the_uncapped_one_and_after_the_others_renormalise(mix_dirs):
    capped, free = _loader(mix_dirs, {"math": 1}), _loader(mix_dirs)
    b, n = 4, capped.collator.source.sizes[NAMES.index("math")]
    rows, counts = _run(capped, 120)
    k = next(i + 1 for i, c in enumerate(counts) if c["math"] == n)  # steps done when math ran out
    ref = [_rows(x) for x, _ in take(free, k)]
    assert rows[: k - 1] == ref[: k - 1]  # the cap changes nothing before the step that reaches it
    assert counts[k - 1]["math"] == n and len(rows[k - 1]) == b  # that step: math's remainder, filled by the others
    # From step k on: weights web 0.2/0.5, code 0.3/0.5, the targets anchored at the counts after step k.
    live = {"web": 0.2 / 0.5, "code": 0.3 / 0.5}
    for j in range(k, len(counts)):
        assert counts[j]["math"] == n
        for name, w in live.items():
            target = counts[k - 1][name] + w * (j + 1 - k) * b
            assert abs(counts[j][name] - target) < 1, (j, name, counts[j], target)
    sampler = capped.collator.source
    assert sampler.anchor.step == k and sampler.anchor.windows == k * b
    assert {r["name"]: r["weight"] for r in sampler.report()}["math"] == 0.0


@st.composite
def _capped_mixtures(draw):
    n = draw(st.integers(2, 4))
    names = [f"s{i}" for i in range(n)]
    weights = {k: draw(st.floats(0.05, 5.0)) for k in names}
    capped = draw(st.sets(st.sampled_from(names), min_size=1, max_size=n))
    caps = {k: draw(st.sampled_from([0.5, 1, 1.3, 2, 3])) for k in sorted(capped)}
    return names, weights, caps


@pytest.fixture(scope="module")
def four_readers(tmp_path_factory):
    return readers_of(tmp_path_factory.mktemp("prop"), [60 + 40 * i for i in range(4)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mix=_capped_mixtures(), batch_size=st.integers(1, 4), world_size=st.integers(1, 2), resume_at=st.integers(0, 60))
def test_caps_hold_after_every_step_and_the_rest_stay_exact(four_readers, mix, batch_size, world_size, resume_at):
    """No source passes its cap; one that ran out gave exactly its cap; the others follow their
    renormalised weights within one window from the step after; a resume changes nothing."""
    names, weights, caps = mix
    readers = {k: four_readers[k] for k in names}
    make = lambda: MixtureSampler(readers, weights, seq_len=T, batch_size=batch_size, world_size=world_size, rank=0, max_epochs=caps)  # noqa: E731
    try:
        sampler = make()
    except ConfigError as e:  # caps too small for one step: refused up front
        assert "too few windows" in str(e)
        return
    limits = sampler.limits
    b = sampler.step_samples
    total = sum(weights.values())
    steps = sampler.pass_steps(sampler.begin_pass())
    ref = make()
    ref.begin_pass()
    for g in range(80 if steps is None else steps):
        if g == resume_at:
            state = roundtrip(sampler.state_dict())
            sampler = make()
            sampler.load_state_dict(state)
            sampler.begin_pass()
        before = list(sampler.counts)
        sampler.advance()
        ref.advance()
        assert sampler.counts == ref.counts
        counts = sampler.counts
        assert sum(counts) == sampler.windows == (g + 1) * b
        for s, lim in enumerate(limits):
            assert lim is None or counts[s] <= lim
        out = [lim is not None and c >= lim for c, lim in zip(counts, limits)]
        was_out = [lim is not None and c >= lim for c, lim in zip(before, limits)]
        assert all(c == p for c, p, o in zip(counts, before, was_out) if o), "an out source gave a window"
        live_total = sum(weights[n] for n, o in zip(names, out) if not o)
        if any(out) and any(not o for o in out):
            a = sampler.anchor
            for s, name in enumerate(names):
                if not out[s]:
                    target = a.targets[s] + weights[name] / live_total * (sampler.windows - a.windows)
                    assert abs(counts[s] - target) < 1
        elif not any(out):
            for s, name in enumerate(names):
                assert abs(counts[s] - weights[name] / total * sampler.windows) < 1
    if steps is not None:  # the stream ended: the step after cannot be filled by the sources left
        assert all(lim is not None for lim, w in zip(limits, weights.values()) if w > 0)
        left = sum(lim - c for lim, c in zip(limits, sampler.counts))
        assert left < b


# -- a stream that every cap ends; len; endless ones ------------------------------------------------------------
def test_a_stream_whose_every_source_is_capped_ends_and_knows_its_length(mix_dirs):
    ld = _loader(mix_dirs, {"web": 0.5, "code": 1, "math": 1.5})
    sizes = ld.collator.source.sizes
    caps = [math.floor(0.5 * sizes[0]), sizes[1], math.floor(1.5 * sizes[2])]
    n = len(ld)
    got = [b for b in ld]
    assert len(got) == n
    assert sum(caps) - 4 < 4 * n <= sum(caps)  # the partial last step is dropped
    counts = ld.windows_by_source()
    assert all(counts[name] <= cap for name, cap in zip(NAMES, caps))
    assert list(ld) == [] and len(ld) == 0  # iterating again: the stream has nothing left


def test_len_of_a_stream_with_an_uncapped_source_is_endless(mix_dirs):
    with pytest.raises(TypeError, match="endless"):
        len(_loader(mix_dirs, {"math": 1}))


def test_a_phase_with_no_uncapped_source_ends_the_stream_only_if_its_caps_run_out_in_it(mix_dirs):
    weights = [(0, {"web": 0, "code": 1, "math": 1}), (40, {"web": 1, "code": 1, "math": 1})]
    short = _loader(mix_dirs, {"code": 0.25, "math": 1}, weights=weights)  # 41 + 44 windows: out before step 40
    n = len(short)
    assert n < 40 and len(list(short)) == n
    long = _loader(mix_dirs, {"code": 1, "math": 1}, weights=weights)  # 166 + 44 windows last past step 40
    with pytest.raises(TypeError, match="endless"):
        len(long)
    assert len(take(long, 60)) == 60


# -- finite mixtures: caps count per pass -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["shuffle", "sequential"])
def test_each_pass_of_a_finite_mixture_reads_x_epochs_of_a_capped_source(mix_dirs, mode):
    ld = _loader(mix_dirs, {"math": 1}, epochs=1, primary="web", mode=mode)
    n_math = ld.collator.source.sizes[NAMES.index("math")]
    passes = []
    for _ in range(3):
        math_rows = [s for x, _ in ld for name, s in _rows(x) if name == "math"]
        assert sorted(math_rows) == sorted(set(math_rows)) and len(math_rows) == n_math  # one whole epoch a pass
        passes.append(math_rows)
    if mode == "sequential":
        assert passes[0] == passes[1] == passes[2]
    else:
        assert passes[0] != passes[1]  # a new epoch of math each pass
    assert ld.epochs_by_source()["math"] == 3.0


def test_a_capped_primary_ends_its_pass_at_the_cap(mix_dirs):
    ld = _loader(mix_dirs, {"code": 1.5}, epochs=2, primary="code", weights={"web": 0.3, "code": 0.6, "math": 0.1})
    n_code = ld.collator.source.sizes[NAMES.index("code")]
    for _ in range(2):
        expected = len(ld)
        rows = [r for x, _ in ld for r in _rows(x)]
        assert len(rows) == 4 * expected
        code = [s for name, s in rows if name == "code"]
        assert math.floor(1.5 * n_code) - 4 < len(code) <= math.floor(1.5 * n_code)


# -- exact resume -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_of_a_capped_stream_before_and_after_the_caps(mix_dirs, workers):
    factory = lambda: _loader(mix_dirs, {"web": 0.25, "code": 0.5, "math": 1}, num_workers=workers)  # noqa: E731
    n = check_resume(factory, [5, 30, 60])  # math is out after ~13 steps, code after ~40
    assert n > 60


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_of_a_finite_mixture_with_a_capped_source_in_every_pass(mix_dirs, workers):
    factory = lambda: _loader(mix_dirs, {"math": 0.5}, epochs=1, primary="code", num_workers=workers)  # noqa: E731
    n = check_resume(factory, [4, 20] if workers == 0 else [20], passes=2 - workers // 2)  # math is out after ~7 steps
    assert n > 20


@pytest.mark.slow
def test_resume_in_a_new_process_before_and_after_a_cap(mix_dirs, tmp_path):
    """States saved before math runs out (step 4 of ~13) and after it (step 25), resumed in
    one new process at num_workers 0 and 2."""
    caps = {"math": 1, "code": 0.5}
    cases = []
    for steps, workers in ((4, 0), (25, 2)):
        first = _loader(mix_dirs, caps)
        it = iter(first)
        for _ in range(steps):
            next(it)
        state_file = tmp_path / f"state{steps}.json"
        state_file.write_text(json.dumps(first.state_dict()))
        cases.append((str(state_file), workers, [batch_hash(*next(it)) for _ in range(30)]))
    script = (
        "import json, sys; sys.path.insert(0, 'tests'); import streamtok; from _util import batch_hash, take\n"
        f"dirs = {json.dumps({k: str(v) for k, v in mix_dirs.items()})}\n"
        f"for path, workers in {[(p, w) for p, w, _ in cases]!r}:\n"
        f"    ld = streamtok.loader(dirs, weights={WEIGHTS!r}, max_epochs={caps!r}, seq_len=8, batch_size=4, "
        "split='all', seed=3, epochs=None, metrics=False, num_workers=workers)\n"
        "    ld.load_state_dict(json.load(open(path)))\n"
        "    print(json.dumps([batch_hash(x, y) for x, y in take(ld, 30)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    got = [json.loads(line) for line in out.stdout.strip().splitlines()[-2:]]
    assert got == [expected for _, _, expected in cases]


@pytest.mark.parametrize("at", [5, 30])
def test_elastic_resume_2_to_1_with_the_same_step_is_the_same_stream(mix_dirs, at):
    """2 ranks of 2 rows and 1 rank of 4 read the same global steps; the cap falls before or after the save."""
    caps = {"math": 1, "code": 0.5}
    ref = [_rows(x) for x, _ in take(_loader(mix_dirs, caps), 50)]
    ranks = [_loader(mix_dirs, caps, batch_size=2, rank=r, world_size=2) for r in range(2)]
    head = [a + b for a, b in zip(*(_run(r, at)[0] for r in ranks))]
    one = _loader(mix_dirs, caps, batch_size=4, rank=0, world_size=1)
    one.load_state_dict(roundtrip(ranks[1].state_dict()))
    tail = _run(one, 50 - at)[0]
    assert head + tail == ref


@pytest.mark.parametrize("at", [5, 30])
def test_elastic_resume_1_to_2_with_another_step_size_keeps_every_cap(mix_dirs, at):
    caps = {"math": 1, "code": 0.5}
    one = _loader(mix_dirs, caps, batch_size=3)
    head = [r for step in _run(one, at)[0] for r in step]
    state = roundtrip(one.state_dict())
    ranks = [_loader(mix_dirs, caps, batch_size=4, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.load_state_dict(state)
    tail = [r for rank in ranks for step in _run(rank, 40)[0] for r in step]
    sampler = ranks[0].collator.source
    for s, name in enumerate(NAMES):
        got = sorted(start for n, start in head + tail if n == name)
        assert len(got) == sampler.counts[s]
        assert got == _own_order(ranks[0], name, sampler.counts[s])  # nothing repeated or skipped
    assert sampler.counts[NAMES.index("math")] == sampler.limits[NAMES.index("math")]
    assert sampler.counts[NAMES.index("code")] == sampler.limits[NAMES.index("code")]


# -- the state, other caps at resume ------------------------------------------------------------------------------
def test_the_state_records_the_caps_and_where_they_count_from(mix_dirs):
    ld = _loader(mix_dirs, {"math": 1.5}, epochs=1, primary="web")
    list(ld)
    take(ld, 3)  # the second pass: the caps count from its start
    sampler = ld.collator.source
    state = ld.state_dict()["sampler"]
    assert state["max_epochs"] == {"math": 1.5}
    assert state["cap_from"] == dict(zip(NAMES, sampler.cap_from))
    assert state["cap_from"]["math"] == sampler.sizes[NAMES.index("math")] * 2  # 1.5 epochs read: the next start is 2
    assert roundtrip(state) == state


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["max_epochs"].update(math=0), "0 epochs"),
    (lambda s: s["max_epochs"].update(math=float("nan")), "'math'"),
    (lambda s: s["max_epochs"].update(books=1), "unexpected key"),
    (lambda s: s["cap_from"].update(math=10**6), "out of range"),
    (lambda s: s["cap_from"].pop("web"), "'web'"),
    (lambda s: s.update(cap_from=[0, 0, 0]), "'cap_from'"),
])
def test_corrupt_caps_in_a_state_are_refused(mix_dirs, edit, message):
    ld = _loader(mix_dirs, {"math": 1})
    take(ld, 3)
    state = roundtrip(ld.state_dict())
    edit(state["sampler"])
    with pytest.raises(StateMismatchError, match=message):
        _loader(mix_dirs, {"math": 1}).load_state_dict(state)


def test_a_cap_added_at_resume_stops_a_source_already_past_it_with_one_log_line(mix_dirs, caplog):
    ld = _loader(mix_dirs)
    take(ld, 40)
    n_math = ld.collator.source.sizes[NAMES.index("math")]
    assert ld.windows_by_source()["math"] > n_math
    capped = _loader(mix_dirs, {"math": 1})
    with caplog.at_level(logging.INFO, logger="streamtok"):
        capped.load_state_dict(roundtrip(ld.state_dict()))
    assert len([r for r in caplog.records if "max_epochs {'math': 1}" in r.getMessage()]) == 1
    before = capped.windows_by_source()["math"]
    take(capped, 10)
    assert capped.windows_by_source()["math"] == before  # a stream's caps count from 0: out already


def test_same_caps_resume_logs_nothing(mix_dirs, caplog):
    ld = _loader(mix_dirs, {"math": 1})
    take(ld, 20)
    with caplog.at_level(logging.INFO, logger="streamtok"):
        _loader(mix_dirs, {"math": 1}).load_state_dict(roundtrip(ld.state_dict()))
    assert not caplog.records


# -- locate ---------------------------------------------------------------------------------------------------------
def test_locate_follows_the_caps(mix_dirs):
    ld = _loader(mix_dirs, {"web": 0.25, "code": 0.5, "math": 1})
    batches = [_rows(x) for x, _ in ld]
    fresh = _loader(mix_dirs, {"web": 0.25, "code": 0.5, "math": 1})
    for step in (0, 12, 13, 14, 45, len(batches) - 1):  # before, at and after the caps
        rows = fresh.locate(step)
        assert [r.source for r in rows] == [name for name, _ in batches[step]]
    with pytest.raises(ConfigError, match="past the end.*max_epochs"):
        fresh.locate(len(batches))


# -- bad input ------------------------------------------------------------------------------------------------------
BAD = [
    ({"books": 1}, "unknown source"),
    ({"math": 0}, "> 0"),
    ({"math": -1}, "> 0"),
    ({"math": float("nan")}, "> 0"),
    ({"math": float("inf")}, "> 0"),
    ({"math": True}, "> 0"),
    ({"math": "2"}, "> 0"),
    ({"math": 0.01}, "less than one window"),
    ([("math", 1)], "a mapping"),
    ({"web": 1 / 555, "code": 1 / 166, "math": 1 / 44}, "too few windows"),  # one window each, 4 a step
]


@pytest.mark.parametrize("caps,message", BAD)
def test_bad_max_epochs_are_config_errors(mix_dirs, caps, message):
    with pytest.raises(ConfigError, match=message):
        _loader(mix_dirs, caps)


def test_a_cap_no_run_can_reach_is_no_cap(mix_dirs):
    ld = _loader(mix_dirs, {"math": 1e300, "code": 10**20})
    assert ld.collator.source.limits is None
    with pytest.raises(TypeError, match="endless"):
        len(ld)
    take(ld, 3)
    state = roundtrip(ld.state_dict())
    assert state["sampler"]["max_epochs"] == {"code": 10**20, "math": 1e300}
    again = _loader(mix_dirs, {"math": 1e300, "code": 10**20})
    again.load_state_dict(state)
    assert [batch_hash(*b) for b in take(again, 2)] == [batch_hash(*b) for b in take(ld, 2)]


def test_max_epochs_needs_a_mixture(mix_dirs):
    with pytest.raises(ConfigError, match="max_epochs= are for a mixture"):
        streamtok.loader(mix_dirs["web"], max_epochs={"web": 1}, seq_len=T, batch_size=4, split="all", metrics=False)


def test_fractional_epochs_are_read_as_written(mix_dirs, tmp_path):
    make_shards(tmp_path / "hundred", [100 * (T + 1)], start=4 * BASE)
    ld = streamtok.loader({"a": tmp_path / "hundred", "web": mix_dirs["web"]}, weights={"a": 1, "web": 1},
                          max_epochs={"a": 0.29}, seq_len=T, batch_size=4, split="all", epochs=None, metrics=False)
    assert ld.collator.source.limits[0] == 29  # 0.29 * 100 in binary floating point is 28.999999999999996
    third = streamtok.loader({"a": tmp_path / "hundred", "web": mix_dirs["web"]}, weights={"a": 1, "web": 1},
                             max_epochs={"a": 1 / 3}, seq_len=T, batch_size=4, split="all", epochs=None, metrics=False)
    assert third.collator.source.limits[0] == 33
    take(ld, 80)
    assert ld.windows_by_source()["a"] == 29 and ld.epochs_by_source()["a"] == 0.29


def test_one_source_reports_no_epochs_by_source(mix_dirs):
    ld = streamtok.loader(mix_dirs["web"], seq_len=T, batch_size=4, split="all", metrics=False)
    assert ld.epochs_by_source() == {}


def test_persistent_workers_carry_each_pass_s_caps(mix_dirs):
    """The pass start a worker gets holds the pass's limits: every pass reads its capped epoch."""
    make = lambda **kw: _loader(mix_dirs, {"math": 1, "code": 0.5}, epochs=1, primary="web", **kw)  # noqa: E731
    ref = make()
    expected = [[batch_hash(*b) for b in ref] for _ in range(2)]
    ld = make(num_workers=2, persistent_workers=True)
    assert [[batch_hash(*b) for b in ld] for _ in range(2)] == expected


def test_a_pass_left_early_counts_the_next_pass_s_caps_from_its_start(mix_dirs):
    ld = _loader(mix_dirs, {"math": 1}, epochs=1, primary="web", mode="sequential")
    full = [r for x, _ in _loader(mix_dirs, {"math": 1}, epochs=1, primary="web", mode="sequential") for r in _rows(x)]
    _run(ld, 5)  # left after 5 steps: math part-way through its epoch
    again = [r for x, _ in ld for r in _rows(x)]
    assert again == full  # the next pass: math from its next epoch start, one whole epoch again


def test_streamtok_locate_rebuilds_a_capped_mixture_from_its_state(mix_dirs, tmp_path, capsys):
    from streamtok import cli

    caps = {"web": 0.25, "code": 0.5, "math": 1}
    ld = _loader(mix_dirs, caps)
    batches = [_rows(x) for x, _ in ld]
    state = roundtrip(ld.state_dict())
    assert state["origin"]["max_epochs"] == caps
    (tmp_path / "state.json").write_text(json.dumps(state))
    step = len(batches) - 2  # after every cap but the last
    assert cli.main(["locate", str(tmp_path / "state.json"), "--step", str(step), "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["source"] for p in printed] == [name for name, _ in batches[step]]
    state["origin"]["max_epochs"] = {"math": "1"}
    (tmp_path / "bad.json").write_text(json.dumps(state))
    assert cli.main(["locate", str(tmp_path / "bad.json"), "--step", "1"]) == 2
    assert "origin.max_epochs" in capsys.readouterr().err


@pytest.mark.parametrize("label", ["stream", "finite"])
def test_a_state_saved_before_caps_loads_into_a_capped_loader(tmp_path, label):
    """tests/fixtures/mixture_state_v1.json (no max_epochs, no cap_from): the caps count from
    each source's epoch start (a stream's: 0), and the source stops there."""
    fixture = json.loads((ROOT / "tests" / "fixtures" / "mixture_state_v1.json").read_text())
    dirs = {}
    for name, src in fixture["sources"].items():
        make_shards(tmp_path / name, src["lengths"], start=src["start"])
        dirs[name] = tmp_path / name
    saved = fixture["states"][label]
    ld = streamtok.loader(dirs, weights=fixture["weights"], max_epochs={"math": 1}, **fixture["loader"], **saved["kw"])
    ld.load_state_dict(saved["state"])
    sampler = ld.collator.source
    n_math = sampler.sizes[NAMES.index("math")]
    assert sampler.cap_from == [0, 0, 0]  # every count of the fixture is inside its source's epoch 0
    rows = [r for x, _ in ld for r in _rows(x)] if label == "finite" else [r for x, _ in take(ld, 150) for r in _rows(x)]
    assert ld.windows_by_source()["math"] == n_math  # read to its cap from the saved 9 or 15, not past it
    assert sum(1 for name, _ in rows if name == "math") == n_math - saved["state"]["sampler"]["sources"]["math"]["windows"]
