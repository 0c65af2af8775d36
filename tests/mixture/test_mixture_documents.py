"""Documents inside mixtures: each source's rows from its own documents, exact proportions, exact
and elastic resume, new weights, the prefetcher's ``doc``, the monitor's per-source line, ``locate``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from _util import ROOT, batch_hash, check_resume, roundtrip, take, write_source_docs

import streamtok
from streamtok import ConfigError, StateMismatchError

T, B = 12, 4
NAMES = ("web", "code", "math")
# Source s writes tokens in [1000 (s+1) + 1, 1000 (s+1) + 999); web and code start documents
# with 1000 and 2000 (given as bos_id), math with 50256 (its format's default: uint16 llm.c).
BOS = {"web": 1000, "code": 2000, "math": 50256}
GIVEN = {"web": 1000, "code": 2000}
WEIGHTS = {"web": 0.5, "code": 0.3, "math": 0.2}
DOCS = {"web": (2, 40), "code": (1, 24), "math": (1, 30)}  # shards, documents per shard


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return write_source_docs(tmp_path_factory.mktemp("mixdocs"), {name: DOCS[name] for name in NAMES}, BOS, seed=7)


def _loader(dirs, documents, **kw):
    opts = dict(seq_len=T, batch_size=B, split="all", seed=3, epochs=None, metrics=False, bos_id=GIVEN, documents=documents)
    opts.update(kw)
    weights = opts.pop("weights", WEIGHTS)
    return streamtok.loader({n: dirs[n] for n in NAMES}, weights=weights, **opts)


def _source(token: int) -> str:
    return "math" if token == BOS["math"] else NAMES[token // 1000 - 1]


def _check_rows(x: torch.Tensor, y: torch.Tensor, doc, documents: str) -> list[str]:
    """Each row from one source, its segments starting exactly at that source's boundary tokens."""
    starts = set(doc.cu_seqlens[:-1].tolist())
    names = []
    for r in range(B):
        row = x[r].tolist() + [int(y[r, -1])]
        name = _source(row[0])
        assert {_source(t) for t in row} == {name}, f"row {r} mixes sources"
        if documents != "mask":
            assert row[0] == BOS[name], f"a {documents} row starts at a document start"
        for c in range(1, T):
            assert (r * T + c in starts) == (row[c] == BOS[name]), f"row {r} col {c}: boundary of {name} missed or invented"
        names.append(name)
    return names


@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_rows_come_from_their_own_documents_and_proportions_hold_after_every_step(dirs, documents):
    ld = _loader(dirs, documents)
    seen = dict.fromkeys(NAMES, 0)
    for step, (x, y, doc) in zip(range(40), ld):
        for name in _check_rows(x, y, doc, documents):
            seen[name] += 1
        assert seen == ld.windows_by_source(), f"step {step}: rows seen differ from the counts"
        report = ld.collator.source.report()
        total = (step + 1) * B
        assert all(abs(r["windows"] - r["target"] * total) < 1 for r in report), f"step {step}: {report}"
    if documents == "mask":  # the windows of documents="stream", with boundaries
        plain = [x for x, _ in take(_loader(dirs, "stream", bos_id=None), 40)]
        assert all(torch.equal(a, b[0]) for a, b in zip(plain, take(_loader(dirs, "mask"), 40)))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_resume_is_bit_exact(dirs, documents, workers):
    n = check_resume(lambda: _loader(dirs, documents, epochs=1, primary="code", num_workers=workers), [1, 6])
    assert n > 6


def test_resume_in_a_new_process_at_0_and_2_workers(dirs, tmp_path):
    """One new process resumes each mode's state at num_workers 0 and 2: the same batches."""
    expected = {}
    for documents in ("mask", "bos", "pack"):
        first = _loader(dirs, documents)
        take(first, 7)
        (tmp_path / f"{documents}.json").write_text(json.dumps(first.state_dict()))
        expected[documents] = [batch_hash(*b) for b in take(first, 5)]
    script = (
        "import json, sys; sys.path.insert(0, 'tests'); import streamtok; from _util import batch_hash, take\n"
        f"dirs = {json.dumps({k: str(v) for k, v in dirs.items()})}\n"
        "out = {}\n"
        "for documents in ('mask', 'bos', 'pack'):\n"
        "    for workers in (0, 2):\n"
        f"        ld = streamtok.loader({{n: dirs[n] for n in {list(NAMES)!r}}}, weights={WEIGHTS!r}, seq_len={T}, "
        f"batch_size={B}, split='all', seed=3, epochs=None, metrics=False, bos_id={GIVEN!r}, documents=documents, "
        "num_workers=workers)\n"
        f"        ld.load_state_dict(json.load(open({str(tmp_path)!r} + f'/{{documents}}.json')))\n"
        "        out[f'{documents}-{workers}'] = [batch_hash(*b) for b in take(ld, 5)]\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {f"{d}-{w}": expected[d] for d in expected for w in (0, 2)}


@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_elastic_resume_between_world_sizes(dirs, documents, before, after):
    """The same global step (4 rows) on 1 or 2 ranks: the ranks' rows together are the one rank's."""
    ref = take(_loader(dirs, documents), 14)

    def run(world, steps, state=None):
        ranks = [_loader(dirs, documents, rank=r, world_size=world, batch_size=B // world) for r in range(world)]
        for ld in ranks:
            if state is not None:
                ld.load_state_dict(state)
        got = [torch.cat([b[0] for b in step]) for step in zip(*(take(ld, steps) for ld in ranks))]
        return got, roundtrip(ranks[0].state_dict())

    head, state = run(before, 6)
    tail, _ = run(after, 8, state)
    assert all(torch.equal(a, r[0]) for a, r in zip(head + tail, ref))
    assert len(head + tail) == 14


@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_new_weights_at_resume_continue_each_source(dirs, documents):
    """Each source continues its own rows; the new weights hold from the resume on."""

    def rows_of(batches):
        out = {n: [] for n in NAMES}
        for x, y, _ in batches:
            for r in range(B):
                out[_source(int(x[r, 0]))].append(x[r].tolist())
        return out

    first = _loader(dirs, documents)
    head = rows_of(take(first, 6))
    new = {"web": 0.1, "code": 0.1, "math": 0.8}
    resumed = _loader(dirs, documents, weights=new)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    before = resumed.windows_by_source()
    tail = rows_of(take(resumed, 20))
    after = resumed.windows_by_source()
    for name in NAMES:  # alone (the others paused), a source gives its rows in its own order
        alone = rows_of(take(_loader(dirs, documents, weights={n: float(n == name) for n in NAMES}), 28))[name]
        got = head[name] + tail[name]
        assert got == alone[: len(got)], f"{name} did not continue its own rows"
        assert abs((after[name] - before[name]) - new[name] * 20 * B) < 1.5


@pytest.mark.parametrize("documents", ["mask", "pack"])
def test_prefetcher_carries_doc(dirs, documents):
    plain = take(_loader(dirs, documents), 12)
    staged = take(streamtok.CUDAPrefetcher(_loader(dirs, documents, num_workers=2), "cpu"), 12)
    for a, b in zip(plain, staged):
        assert len(b) == 3 and batch_hash(*a) == batch_hash(*b)


def test_the_monitor_shows_each_sources_line(dirs, tmp_path, monkeypatch):
    from streamtok_monitor import panels
    from streamtok_monitor.watcher import Sampler

    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)
    ld = _loader(dirs, "pack", metrics=True)
    it = iter(ld)
    for _ in range(9):
        next(it)
    it.close()
    snap = Sampler(run_dir=ld.metrics.dir, slow_interval_s=3600).sample()
    keys = ("name", "windows", "tokens", "epoch", "share", "target", "weight")
    assert [{k: s[k] for k in keys} for s in snap["run"]["mixture"]["sources"]] == [
        {k: r[k] for k in keys} for r in ld.collator.source.report()
    ]
    assert sum(s["windows"] for s in snap["run"]["mixture"]["sources"]) == 9 * B
    assert all(s["epoch"] == 0 for s in snap["run"]["mixture"]["sources"])  # packed: exact, not guessed
    text = panels.run_panel(snap, width=60, rows=9).plain
    assert all(n in text for n in NAMES)


@pytest.mark.parametrize("documents, world", [("mask", 1), ("bos", 2), ("pack", 1), ("pack", 2)])
def test_locate_names_source_shard_offset_and_document(dirs, documents, world):
    rank = world - 1
    ld = _loader(dirs, documents, rank=rank, world_size=world, batch_size=B // world)
    batches = take(ld, 30)
    fresh = _loader(dirs, documents, rank=rank, world_size=world, batch_size=B // world)
    for step in np.random.default_rng(1).choice(30, 8, replace=False).tolist():
        x = batches[step][0]
        for r, rec in enumerate(fresh.locate(step)):
            assert rec.source == _source(int(x[r, 0]))
            shard_tokens = np.fromfile(rec.shard, dtype=np.uint16, offset=1024)
            assert int(shard_tokens[rec.offset]) == int(x[r, 0])
            # The document: boundary tokens of this source up to the row's first token, less one.
            before = 0
            for p in sorted(dirs[rec.source].glob("*.bin")):
                t = np.fromfile(p, dtype=np.uint16, offset=1024)
                if str(p) == rec.shard:
                    before += int((t[: rec.offset + 1] == BOS[rec.source]).sum())
                    break
                before += int((t == BOS[rec.source]).sum())
            assert rec.document == before - 1


@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_locate_knows_where_a_finite_pass_ends(dirs, documents):
    ld = _loader(dirs, documents, epochs=1, primary="code")
    batches = list(ld)
    last = ld.locate(len(batches) - 1)
    assert [r.source for r in last] == [_source(int(v)) for v in batches[-1][0][:, 0]]
    with pytest.raises(ConfigError, match="past the end"):
        ld.locate(len(batches))


def test_streamtok_locate_rebuilds_a_documents_mixture_from_its_state(dirs, tmp_path, capsys):
    from streamtok import cli

    ld = _loader(dirs, "pack")
    take(ld, 5)
    (tmp_path / "state.json").write_text(json.dumps(ld.state_dict()))
    assert cli.main(["locate", str(tmp_path / "state.json"), "--step", "12", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["source"], p["shard"], p["offset"], p["document"]) for p in printed] == [
        (r.source, r.shard, r.offset, r.document) for r in ld.locate(12)
    ]


BAD = [
    ({"bos_id": {"books": 3}}, "not sources"),
    ({"bos_id": {"web": -1}}, "non-negative token id"),
    ({"documents": "bos", "block_docs": 10}, "only with documents='pack'"),
    ({"documents": "stream", "bos_id": 5}, "take effect only with documents="),
    ({"documents": "lines"}, "documents must be one of"),
]


@pytest.mark.parametrize("kw, message", BAD)
def test_bad_document_settings_are_config_errors(dirs, kw, message):
    opts = {"documents": "pack", **kw}
    with pytest.raises(ConfigError, match=message):
        _loader(dirs, **opts)


def test_a_source_without_its_boundary_token_is_never_silent(dirs):
    with pytest.warns(UserWarning, match="0 document starts.*source 'code'"):
        _loader(dirs, "mask", bos_id={**GIVEN, "code": 7})
    for documents in ("bos", "pack"):
        with pytest.raises(ConfigError, match="source 'code'"):
            _loader(dirs, documents, bos_id={**GIVEN, "code": 7})


def test_a_bos_id_per_source_needs_a_mixture(dirs):
    with pytest.raises(ConfigError, match="for a mixture"):
        streamtok.loader(dirs["web"], seq_len=T, batch_size=B, split="all", documents="bos", bos_id=GIVEN, metrics=False)


def test_a_state_of_other_rows_is_refused(dirs):
    plain = _loader(dirs, "stream", bos_id=None)
    take(plain, 2)
    with pytest.raises(StateMismatchError, match="documents"):
        _loader(dirs, "bos").load_state_dict(roundtrip(plain.state_dict()))
    packed = _loader(dirs, "pack")
    take(packed, 2)
    state = roundtrip(packed.state_dict())
    # math saved with its format's default (bos_id None: token 50256), now given as 50256: the same
    # token, the same rows (the state records the token itself); another token is refused
    _loader(dirs, "pack", bos_id={**GIVEN, "math": 50256}).load_state_dict(state)
    web = np.concatenate([np.fromfile(p, dtype=np.uint16, offset=1024) for p in sorted(dirs["web"].glob("*.bin"))])
    other = int(np.bincount(web[web != BOS["web"]]).argmax())  # a token web holds, not its boundary
    with pytest.raises(streamtok.BoundaryMismatchError, match=f"'web'.*token {BOS['web']}.*token {other}"):
        _loader(dirs, "pack", bos_id={**GIVEN, "web": other}).load_state_dict(state)
    old = roundtrip(state)  # saved before the token was recorded: bos_id compared as given, as then
    for entry in old["sampler"]["sources"].values():
        del entry["boundary"]
    with pytest.raises(StateMismatchError, match="bos_id"):
        _loader(dirs, "pack", bos_id={**GIVEN, "math": 50256}).load_state_dict(old)
    state["sampler"]["sources"]["web"]["mark"] = [10**9, 0, 0]
    with pytest.raises(StateMismatchError, match="mark"):
        _loader(dirs, "pack").load_state_dict(state)


@pytest.mark.parametrize("documents", ["mask", "pack"])
def test_the_batch_stage_pickles_as_spawned_workers_receive_it(dirs, documents):
    """Spawned workers unpickle the mixture's stage: the joint index reopens each source's maps."""
    import itertools
    import pickle

    ld = _loader(dirs, documents)
    stage = pickle.loads(pickle.dumps(ld.collator))
    start = ld.collator.source.next_pass()
    mine = list(itertools.islice(ld.collator.source.iter_steps(start), 6))
    theirs = list(itertools.islice(stage.source.iter_steps(start), 6))
    for a, b in zip(mine, theirs):
        assert np.array_equal(a, b)
        assert torch.equal(ld.collator.gather(a), stage.gather(b))
    docs_a = ld.collator._collator.chunk_documents(mine if documents == "pack" else np.stack(mine))
    docs_b = stage._collator.chunk_documents(theirs if documents == "pack" else np.stack(theirs))
    assert all(torch.equal(p.cu_seqlens, q.cu_seqlens) for p, q in zip(docs_a, docs_b))


# -- repetition caps (max_epochs) count each mode's units ------------------------------------------------------
def _math_units(ld, n_units):
    """The first ``n_units`` rows (``T`` tokens) of math's own order of units, epoch after epoch."""
    mixture = ld.collator.source
    own = mixture.samplers[NAMES.index("math")]
    if mixture.documents == "pack":  # packed rows: their pieces, one after another
        return [
            tuple(np.concatenate([own.source.read(a, a + n) for a, n in row])[:T].tolist())
            for row in own.rows(list(range(n_units)))
        ]
    rows = []
    for k in range(n_units):
        start = int(own.starts(k // own.n_samples, np.array([k % own.n_samples]))[0])
        rows.append(tuple(own.source.read(start, start + T).tolist()))
    return rows


def _units_of_epochs(mixture, name, x):
    """A cap of ``x`` epochs in units: floor(x * n); packed rows: the rows of those epochs (x <= 1 here)."""
    s = mixture.names.index(name)
    if mixture.documents == "pack":
        return int(x * mixture.samplers[s].epoch_start(1))
    return int(x * mixture.sizes[s])


@pytest.mark.parametrize("x", [1, 0.5])
@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_a_capped_source_gives_exactly_its_units_of_x_epochs(dirs, documents, x):
    """mask: windows, bos: rows from document starts, pack: packed rows; x epochs of them, its
    own order, then its share goes."""
    ld = _loader(dirs, documents, max_epochs={"math": x})
    mixture = ld.collator.source
    n = mixture.sizes[NAMES.index("math")]
    cap = _units_of_epochs(mixture, "math", x)
    steps = int(2 * n / (WEIGHTS["math"] * B)) + 10  # well past the cap
    math_rows, last = [], []
    for step, (xb, y, doc) in zip(range(steps), ld):
        names = _check_rows(xb, y, doc, documents)
        math_rows += [tuple(xb[r].tolist()) for r, name in enumerate(names) if name == "math"]
        last = names
    assert len(math_rows) == cap  # not one unit more, none fewer
    assert sorted(math_rows) == sorted(_math_units(ld, cap))  # each unit of its order once
    assert ld.windows_by_source()["math"] == cap
    # exact: x of its epochs (packed rows: their own count, not the bound n)
    per_epoch = mixture.samplers[NAMES.index("math")].epoch_start(1) if documents == "pack" else n
    assert ld.epochs_by_source()["math"] == cap / per_epoch
    assert "math" not in last  # out: its weight renormalised away
    assert {r["name"]: r["weight"] for r in mixture.report()}["math"] == 0.0
    state = ld.state_dict()["sampler"]
    assert state["max_epochs"] == {"math": x} and state["cap_from"]["math"] == 0
    if documents != "mask":  # both sides' keys: the source's boundary token and the caps
        assert state["sources"]["web"]["bos_id"] == GIVEN["web"]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_a_capped_documents_mixture_resumes_exactly_in_every_pass(dirs, documents, workers):
    factory = lambda: _loader(  # noqa: E731
        dirs, documents, epochs=1, primary="code", max_epochs={"math": 0.25}, num_workers=workers,
    )
    ld = factory()
    mixture, m = ld.collator.source, NAMES.index("math")
    for p in range(2):  # the cap bites in each pass, counted from the pass's start (an epoch start)
        before = ld.windows_by_source()["math"]
        assert sum(1 for _ in ld) > 0
        start = mixture._next_epoch_start(m, before)
        e = mixture.epoch_of(m, start)
        epoch_units = mixture.epoch_start(m, e + 1) - start
        assert ld.windows_by_source()["math"] - start == int(0.25 * epoch_units), p
        assert ld.state_dict()["sampler"]["cap_from"]["math"] == start
    assert check_resume(factory, [1, 6], passes=2) > 6


@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_a_stream_of_capped_documents_ends_and_resumes_exactly(dirs, documents):
    caps = {"web": 0.5, "code": 1, "math": 1}
    factory = lambda: _loader(dirs, documents, max_epochs=caps)  # noqa: E731
    ld = factory()
    steps = len(ld)
    assert steps == sum(1 for _ in ld) > 6
    counts, mixture = ld.windows_by_source(), ld.collator.source
    assert all(counts[n] <= _units_of_epochs(mixture, n, caps[n]) for n in NAMES)
    assert any(counts[n] == _units_of_epochs(mixture, n, caps[n]) for n in NAMES)
    check_resume(factory, [1, 6])


def test_a_packed_cap_is_the_rows_of_its_epochs_whatever_their_bound(dirs):
    """Packed rows: an epoch's rows are fewer than the per-epoch bound (sizes); 1.5 epochs are
    the rows of epoch 0 and half of epoch 1's, each epoch packed on its own."""
    ld = _loader(dirs, "pack", max_epochs={"math": 1.5})
    mixture = ld.collator.source
    own = mixture.samplers[NAMES.index("math")]
    e1, e2 = own.epoch_start(1), own.epoch_start(2)
    assert e1 < mixture.sizes[NAMES.index("math")]  # the bound is not the count
    assert mixture.limits[NAMES.index("math")] == e1 + int(0.5 * (e2 - e1))
    report = {r["name"]: r for r in mixture.report()}["math"]
    assert (report["epoch"], report["max_epochs"]) == (0, 1.5)  # the monitor shows 0/1.5: exact, not unknown
    batches = take(ld, 60)  # past the cap: locate follows it (a fresh course from step 0)
    for step in (0, 59):
        assert [r.source for r in ld.locate(step)] == [_source(int(v)) for v in batches[step][0][:, 0]]


@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_a_documents_state_saved_before_caps_loads_into_a_capped_loader(dirs, documents):
    """A documents-mixture state without max_epochs/cap_from (as the documents branch saved them):
    the caps count from each source's current epoch start; the per-source bos_id is still checked."""
    ld = _loader(dirs, documents, epochs=1, primary="code")
    take(ld, 5)
    state = ld.state_dict()
    del state["sampler"]["max_epochs"], state["sampler"]["cap_from"]
    capped = _loader(dirs, documents, epochs=1, primary="code", max_epochs={"math": 0.25})
    capped.load_state_dict(roundtrip(state))
    mixture = capped.collator.source
    counts = [state["sampler"]["sources"][n]["windows"] for n in NAMES]
    assert mixture.cap_from == [mixture.epoch_start(s, mixture.epoch_of(s, c)) for s, c in enumerate(counts)]
    assert len(list(capped)) > 0
    m = NAMES.index("math")
    # It reads up to its cap, or nothing more if the uncapped run had already passed it.
    assert capped.windows_by_source()["math"] == max(counts[m], mixture.limits[m])
