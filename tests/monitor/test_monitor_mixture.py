"""The monitor on a mixture's run: per-source rows from the published counts, unknown
figures shown as unknown (the run is this test's own process, so it counts as alive)."""

import numpy as np
import pytest
from streamtok_monitor import panels
from streamtok_monitor.watcher import Sampler

import streamtok
from streamtok._formats import write_shard


@pytest.fixture(autouse=True)
def run_root(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)


@pytest.fixture
def sources(tmp_path):
    rng = np.random.default_rng(3)
    out = {}
    for name, n in (("web", 9_000), ("code", 4_000), ("math", 1_500)):
        path = tmp_path / "mix" / f"{name}_000.bin"
        write_shard(path, rng.integers(0, 50257, n, dtype=np.uint16))
        out[name] = [path]
    return out


def _loader(sources, **kw):
    return streamtok.loader(sources, weights={"web": 0.5, "code": 0.3, "math": 0.2}, seq_len=40, batch_size=5, split="all", **kw)


def test_sampler_shows_each_sources_counts(sources):
    loader = _loader(sources, epochs=2, primary="math")
    sampler = Sampler(run_dir=loader._metrics.dir, slow_interval_s=3600)
    before = sampler.sample()["run"]
    assert before["step"] is None and all(s["windows"] is None and s["share"] is None for s in before["mixture"]["sources"])
    assert "-" in panels.run_panel({"run": before}).plain.splitlines()[-1]  # unknown, not 0
    it = iter(loader)
    for _ in range(30):
        next(it)
    it.close()
    snap = sampler.sample()
    run, mix = snap["run"], loader.collator.source
    assert run["step"] == mix.step == 30 and run["mixture"]["primary"] == "math"
    assert run["epoch"] == mix.epoch and run["progress"] == pytest.approx(mix.offset / mix.sizes[2])
    keys = ("name", "windows", "tokens", "epoch", "share", "target", "weight")
    shown = [{k: s[k] for k in keys} for s in run["mixture"]["sources"]]
    assert shown == [{k: r[k] for k in keys} for r in mix.report()]
    assert snap["page_cache"]["hit_ratio"] is None and sampler.pages is None  # a mixture's pages are not replayed
    text = panels.run_panel(snap, width=36, rows=9).plain
    assert "math epoch" in text and all(n in text for n in ("web", "code", "math"))


def test_source_lines_fit_the_rows_given():
    row = {"windows": 10, "tokens": 400, "epoch": 0, "share": 0.25, "target": 0.25, "weight": 0.25}
    rows = [{"name": f"src{i}", **row} for i in range(4)]
    assert panels.mixture_lines(rows, 36, rows=5).plain.count("\n") == 5  # a header and the four
    short = panels.mixture_lines(rows, 36, rows=3).plain
    assert short.count("\n") == 3 and "src0" in short and "… 3 more" in short
    assert "tokens" in panels.mixture_lines(rows, 60, rows=5).plain
    assert "tokens" not in panels.mixture_lines(rows, 36, rows=5).plain


def test_counts_that_do_not_match_the_manifest_are_unknown():
    from streamtok.metrics import publish as metrics

    manifest = {"seq_len": 10, "mixture": {"sources": [{"name": "a", "windows_per_epoch": 4}, {"name": "b", "windows_per_epoch": 4}]}}
    row = {"windows": 2, "tokens": 20, "target": 0.5, "weight": 0.5}
    slot = {"batches": 1, "sources": {"step": 1, "windows": 4, "rows": [row, row]}}
    assert [r["share"] for r in metrics.mixture_report(manifest, slot)] == [0.5, 0.5]
    assert metrics.mixture_report(manifest, {**slot, "sources": {**slot["sources"], "rows": [row] * 3}}) is None
    assert metrics.mixture_report(manifest, {**slot, "batches": 0}) is None  # nothing stored yet
    assert metrics.mixture_report(manifest, None) is None


def test_a_capped_source_shows_its_epoch_over_its_cap_and_no_weight_once_out(sources):
    loader = _loader(sources, epochs=None, max_epochs={"math": 1, "code": 2.5})
    sampler = Sampler(run_dir=loader._metrics.dir, slow_interval_s=3600)
    before = sampler.sample()["run"]["mixture"]["sources"]
    assert [s["max_epochs"] for s in before] == [None, 2.5, 1]  # known from the manifest before any batch
    it = iter(loader)
    for _ in range(40):  # math (36 windows an epoch, one of 5 a step) is out after ~36 steps
        next(it)
    it.close()
    snap = sampler.sample()
    rows = {s["name"]: s for s in snap["run"]["mixture"]["sources"]}
    assert rows == {r["name"]: r for r in loader.collator.source.report()}
    assert rows["math"]["windows"] == loader.collator.source.limits[2] and rows["math"]["weight"] == 0.0
    lines = panels.mixture_lines(list(rows.values()), 60, rows=5).plain.splitlines()
    math_line = next(line for line in lines if line.startswith("math"))
    assert "1/1" in math_line and "0.0%" in math_line
    assert "0/2.5" in next(line for line in lines if line.startswith("code"))
