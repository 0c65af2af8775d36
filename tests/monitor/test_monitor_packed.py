"""The monitor on a single source of packed rows: an epoch's steps are only bounded there, so
the run panel shows the bound as a bound and the share done and the time left as unknown."""

import pytest
from streamtok_monitor import panels
from streamtok_monitor.watcher import Sampler

import streamtok

pytestmark = pytest.mark.filterwarnings("ignore:streamtok. documents=.pack. reads the first")

from _util import BOS, make_doc_shards


@pytest.fixture(autouse=True)
def run_root(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTOK_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("STREAMTOK_METRICS", raising=False)


def _run(tmp_path, documents):
    make_doc_shards(tmp_path / "docs", n_shards=2, docs=200)
    loader = streamtok.loader(str(tmp_path / "docs"), seq_len=32, batch_size=4, split="all", documents=documents, bos_id=BOS)
    sampler = Sampler(run_dir=loader._metrics.dir, slow_interval_s=3600)
    it = iter(loader)
    for _ in range(5):
        next(it)
    it.close()  # publishes the last counts
    return loader, sampler.sample()


def test_packed_rows_show_a_bound_and_no_progress(tmp_path):
    loader, snap = _run(tmp_path, "pack")
    run = snap["run"]
    assert run["step"] == 5 and run["steps_exact"] is False
    assert run["steps_per_epoch"] == loader.collator.source.steps_per_epoch  # the bound the sampler gives
    assert run["progress"] is None and run["eta_s"] is None
    text = panels.run_panel(snap, width=40, rows=9).plain
    assert f"5 / ≤{run['steps_per_epoch']:,}" in text and "ETA -" in text and "%" not in text.split("ETA")[0].splitlines()[-1]


def test_windows_still_show_their_exact_progress(tmp_path):
    loader, snap = _run(tmp_path, "mask")
    run = snap["run"]
    assert run["steps_exact"] is True and run["progress"] == pytest.approx(5 / run["steps_per_epoch"])
    assert f"5 / {run['steps_per_epoch']:,}" in panels.run_panel(snap, width=40, rows=9).plain
