"""A state saved by an earlier release resumes exactly (tests/fixtures/state_v1.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _util import batch_hash, make_shards

import streamtok

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "state_v1.json").read_text())


@pytest.mark.parametrize("mode", sorted(FIXTURE["modes"]))
def test_state_saved_before_the_restructure_resumes(tmp_path, mode):
    data = FIXTURE["data"]
    make_shards(tmp_path, data["lengths"], kind=data["kind"], dtype=np.dtype(data["dtype"]).type)
    saved = FIXTURE["modes"][mode]
    loader = streamtok.loader(tmp_path, mode=mode, metrics=False, **FIXTURE["loader"])
    loader.load_state_dict(saved["state"])
    it = iter(loader)
    assert [batch_hash(*next(it)) for _ in saved["next"]] == saved["next"]


MIXTURE = json.loads((Path(__file__).parent / "fixtures" / "mixture_state_v1.json").read_text())


@pytest.mark.parametrize("label", sorted(MIXTURE["states"]))
def test_mixture_state_saved_before_repetition_caps_resumes(tmp_path, label):
    """A mixture state without ``max_epochs``/``cap_from`` (streamtok 2a7487e) gives the batches that followed it."""
    dirs = {}
    for name, src in MIXTURE["sources"].items():
        make_shards(tmp_path / name, src["lengths"], start=src["start"])
        dirs[name] = tmp_path / name
    saved = MIXTURE["states"][label]
    loader = streamtok.loader(dirs, weights=MIXTURE["weights"], **MIXTURE["loader"], **saved["kw"])
    loader.load_state_dict(saved["state"])
    it = iter(loader)
    assert [batch_hash(*next(it)) for _ in saved["next"]] == saved["next"]
