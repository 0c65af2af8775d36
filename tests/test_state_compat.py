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
