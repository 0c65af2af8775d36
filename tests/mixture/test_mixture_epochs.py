"""Each source's epochs so far (``loader.epochs_by_source()``) are exact in every documents mode,
packed rows included: checked against the truth counted from the batches real loaders yield
(the mixture's rows per source, and each source's rows per epoch from a loader of its own)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from _util import roundtrip, write_source_docs

import streamtok
from streamtok.mixture.sampler import _source_seed

T, B, SEED = 12, 4, 3
NAMES = ("web", "code", "math")
BOS = {"web": 1000, "code": 2000, "math": 3000}  # source s writes tokens in [1000 (s+1), 1000 (s+1) + 999)
WEIGHTS = {"web": 0.5, "code": 0.3, "math": 0.2}
DOCS = {"web": (2, 40), "code": (1, 24), "math": (1, 30)}  # shards, documents per shard
pytestmark = pytest.mark.filterwarnings("ignore:streamtok.*reads the first:UserWarning")  # long documents: tested elsewhere


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return write_source_docs(tmp_path_factory.mktemp("mixepochs"), {name: DOCS[name] for name in NAMES}, BOS, seed=11)


def _blocks(documents):
    """Packed rows: small blocks, so that an epoch's row count depends on its order (one block of
    all documents packs into the same number of rows whatever the order)."""
    return {"block_docs": 8} if documents == "pack" else {}


def _loader(dirs, documents, **kw):
    opts = dict(**_blocks(documents), seq_len=T, batch_size=B, split="all", seed=SEED, epochs=None, metrics=False, bos_id=BOS, documents=documents)
    opts.update(kw)
    return streamtok.loader({n: dirs[n] for n in NAMES}, weights=WEIGHTS, **opts)


def _rows_per_epoch(dirs, name, documents, epochs):
    """Rows of each of a source's first ``epochs`` epochs, counted from the batches of a loader of
    its own (one row a batch: nothing dropped) in the mixture's order of that source."""
    own = streamtok.loader(
        dirs[name], seq_len=T, batch_size=1, split="all", seed=_source_seed(SEED, name), epochs=1, metrics=False,
        bos_id=BOS[name], documents=documents, **_blocks(documents),
    )
    return [sum(1 for _ in own) for _ in range(epochs)]  # each pass: the next epoch


def _truth(counts, per_epoch):
    """Exact epochs after ``counts[name]`` rows: whole epochs, then the share of the next one read."""
    out = {}
    for name, c in counts.items():
        e, rows = 0, per_epoch[name]
        while c >= rows[e]:
            c, e = c - rows[e], e + 1
        out[name] = e + Fraction(c, rows[e])
    return out


def _names(x):
    return [NAMES[int(t) // 1000 - 1] for t in x[:, 0]]


def _check(ld, counts, per_epoch, where):
    got, want = ld.epochs_by_source(), _truth(counts, per_epoch)
    for name in NAMES:
        assert got[name] == pytest.approx(float(want[name]), abs=1e-12), f"{where}: {name} {got[name]} != {want[name]}"
        if want[name].denominator == 1:  # an epoch just finished: exactly it, not 0.93
            assert got[name] == want[name], f"{where}: {name}"
    return want


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_epochs_by_source_are_the_batches_epochs(dirs, documents, workers):
    """After every step, before and after a resume into a new loader, at 0 and 2 workers."""
    steps, resume_at = 70, 23
    per_epoch = {n: _rows_per_epoch(dirs, n, documents, 12) for n in NAMES}
    if documents == "pack":  # the bound the old figure divided by is not an epoch's rows
        bound = _loader(dirs, documents).collator.source.sizes[NAMES.index("math")]
        assert per_epoch["math"][0] < bound
        assert len(set(per_epoch["web"])) > 1  # epochs of other row counts
    counts = dict.fromkeys(NAMES, 0)
    ld = _loader(dirs, documents, num_workers=workers)
    whole = set()
    it = iter(ld)
    for step in range(resume_at):
        for name in _names(next(it)[0]):
            counts[name] += 1
        whole |= {n for n, v in _check(ld, counts, per_epoch, f"step {step}").items() if v.denominator == 1 and v}
    it.close()
    resumed = _loader(dirs, documents, num_workers=workers)
    resumed.load_state_dict(roundtrip(ld.state_dict()))
    _check(resumed, counts, per_epoch, "after the resume")
    it = iter(resumed)
    for step in range(resume_at, steps):
        for name in _names(next(it)[0]):
            counts[name] += 1
        whole |= {n for n, v in _check(resumed, counts, per_epoch, f"step {step}").items() if v.denominator == 1 and v}
    it.close()
    assert _truth(counts, per_epoch)["math"] >= 2  # the run crossed epochs of a source
    assert whole, "no step ended exactly at an epoch's end: the exact case is untested"


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("x", [1, 2, 1.5])
@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_a_capped_source_reports_its_x_epochs_exactly(dirs, documents, x, workers):
    """``max_epochs={"math": x}``: once out, math has read exactly ``x`` of its epochs (1.5:
    epoch 0, then floor(0.5 * rows of epoch 1) of epoch 1); exact after every step, across a
    resume into a new loader."""
    per_epoch = {n: _rows_per_epoch(dirs, n, documents, 30) for n in NAMES}
    ld = _loader(dirs, documents, max_epochs={"math": x}, num_workers=workers)
    counts = dict.fromkeys(NAMES, 0)
    for part in range(2):
        it = iter(ld)
        for step in range(50):
            for name in _names(next(it)[0]):
                counts[name] += 1
            _check(ld, counts, per_epoch, f"part {part}, step {step}")
        it.close()
        if part == 0:
            state = roundtrip(ld.state_dict())
            ld = _loader(dirs, documents, max_epochs={"math": x}, num_workers=workers)
            ld.load_state_dict(state)
    rows = per_epoch["math"]
    want = sum(rows[: int(x)]) + int((x - int(x)) * rows[int(x)])
    assert counts["math"] == want  # the cap: not one row more
    _check(ld, counts, per_epoch, "past the cap")
    if x == int(x):
        assert ld.epochs_by_source()["math"] == x


def test_the_monitor_and_the_metrics_show_the_exact_epoch_of_packed_sources(dirs, tmp_path, monkeypatch):
    from streamtok_monitor import panels
    from streamtok_monitor.watcher import Sampler

    from streamtok.metrics import source_report

    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)
    per_epoch = {n: _rows_per_epoch(dirs, n, "pack", 12) for n in NAMES}
    ld = _loader(dirs, "pack", metrics=True)
    counts = dict.fromkeys(NAMES, 0)
    it = iter(ld)
    for _ in range(60):
        for name in _names(next(it)[0]):
            counts[name] += 1
    it.close()
    want = {n: int(v) for n, v in _truth(counts, per_epoch).items()}  # whole epochs read
    assert want["math"] >= 2
    assert {n: int(v) for n, v in ld.epochs_by_source().items()} == want
    assert {r["name"]: r["epoch"] for r in ld.collator.source.report()} == want
    assert {r["name"]: r["epoch"] for r in source_report(ld.metrics.dir)} == want
    snap = Sampler(run_dir=ld.metrics.dir, slow_interval_s=3600).sample()
    assert {s["name"]: s["epoch"] for s in snap["run"]["mixture"]["sources"]} == want
    text = panels.run_panel(snap, width=60, rows=9).plain
    line = next(ln for ln in text.splitlines() if "math" in ln)
    assert f" {want['math']}" in line and " -" not in line  # the epoch, not unknown


def test_a_stats_file_written_before_the_epoch_word_is_still_read(tmp_path):
    """Header word SOURCE_WORDS 0: four words a source; the epoch is then windows over the
    per-epoch size, and unknown (never the bound's guess) for packed rows."""
    import struct

    from streamtok.metrics import HEADER_WORDS, MAGIC, SLOT_WORDS, StatsReader, mixture_report

    words = [MAGIC, 1, 1, SLOT_WORDS, 0, 2, 0, 0] + [0] * SLOT_WORDS
    words[HEADER_WORDS + 4] = 3  # batches
    block = [5, 12, 9, 24, 0, 0, 3, 6, 0, 0]  # step, windows; per source windows, tokens, target, weight
    (tmp_path / "stats.bin").write_bytes(struct.pack(f"<{len(words) + len(block)}q", *words, *block))
    slot = StatsReader(str(tmp_path)).slot(0)
    assert [r["windows"] for r in slot["sources"]["rows"]] == [9, 3] and "epoch" not in slot["sources"]["rows"][0]
    sources = [{"name": "a", "windows_per_epoch": 4}, {"name": "b", "windows_per_epoch": 4, "epoch_known": False}]
    report = mixture_report({"seq_len": 2, "mixture": {"sources": sources}}, slot)
    assert [r["epoch"] for r in report] == [2, None]


@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_the_primary_s_progress_is_not_shown_from_the_packed_bound(dirs, tmp_path, monkeypatch, documents):
    """A finite mixture's progress in its primary's epoch divides by the epoch's units: for packed
    rows only a bound of them is published, so the share is unknown (``-``), the epoch exact."""
    from streamtok_monitor import panels
    from streamtok_monitor.watcher import Sampler

    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)
    ld = _loader(dirs, documents, metrics=True, epochs=4, primary="math")
    it = iter(ld)
    for _ in range(50):
        next(it)
    it.close()
    run = Sampler(run_dir=ld.metrics.dir, slow_interval_s=3600).sample()["run"]
    assert run["epoch"] == int(ld.epochs_by_source()["math"]) >= 1
    if documents == "pack":
        assert run["progress"] is None
        assert f"math epoch {run['epoch']} -" in panels.run_panel({"run": run}, width=60, rows=9).plain
    else:
        assert run["progress"] == pytest.approx(ld.epochs_by_source()["math"] % 1)


def test_the_epoch_of_a_row_before_a_resumed_table_s_mark(dirs):
    """A resumed source's table of packed rows starts at its saved mark; asking the epoch of an
    earlier row (a cap counted from the pass start) moved the start back but added the old one:
    epoch 1 for row 0, so a resumed cap of one epoch let one packed row more through."""
    own = _loader(dirs, "pack").collator.source.samplers[NAMES.index("math")]
    e1, e2 = own.epoch_start(1), own.epoch_start(2)
    mark = own.mark(e2)
    assert mark[1:] == (2, 0)  # at epoch 2's first block
    for k, want in ((0, 0), (e1 - 1, 0), (e1, 1), (e2 - 1, 1), (e2, 2)):
        own.reset(*mark)
        assert own.epoch_of(k) == want, k
