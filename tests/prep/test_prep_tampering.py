"""Data preparation trusts nothing it did not just compute (issue 19, items 10 and 11)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from prep_helpers import make_docs, run_cli, write_txt

from streamtok.prep import tokenize as tokenize_mod
from streamtok.prep.sources import ReadOptions
from streamtok.prep.tasks import TASK_DIR
from streamtok.prep.tokenize import KILL_ENV


def _args(src, out, *extra):
    return [str(src), "--out", str(out), "--shard-tokens", "400", "--no-progress", *extra]


def test_a_manifest_whose_next_shard_number_was_edited_is_refused(tmp_path, monkeypatch, capsys):
    src = write_txt(tmp_path / "in.txt", make_docs(150, seed=3))
    out = tmp_path / "out"

    class Killed(Exception):
        pass

    def kill(pid, sig):
        raise Killed

    monkeypatch.setenv(KILL_ENV, "2")  # stop right after the third shard was recorded
    monkeypatch.setattr(tokenize_mod.os, "kill", kill)
    with pytest.raises(Killed):
        run_cli(["tokenize", *_args(src, out)])
    monkeypatch.delenv(KILL_ENV)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resume"]["sink"]["next"]["train"] == 3
    manifest["resume"]["sink"]["next"]["train"] = 0  # the rerun would write data_train_000000 again
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = (out / "data_train_000000.bin").read_bytes()
    capsys.readouterr()
    assert run_cli(["tokenize", *_args(src, out)]) == 2
    err = capsys.readouterr().err
    assert "resume.sink.next.train = 0 is not 3, the number of train shards listed" in err and "Traceback" not in err
    assert (out / "data_train_000000.bin").read_bytes() == before


def test_an_input_rewritten_during_tokenize_fails_the_run(tmp_path, monkeypatch, capsys):
    src = write_txt(tmp_path / "in.txt", make_docs(300, seed=4))
    real = tokenize_mod.iter_chunks

    def rewriting(path, *a, **kw):
        for k, chunk in enumerate(real(path, *a, **kw)):
            if k == 1:  # after the first chunk was read: the same size, other text
                data = src.read_bytes()
                src.write_bytes(data.replace(b"the", b"THE"))
            yield chunk

    monkeypatch.setattr(tokenize_mod, "iter_chunks", rewriting)
    out = tmp_path / "out"
    from streamtok.prep.tokenize import TokenizeConfig, tokenize_files

    cfg = TokenizeConfig(shard_tokens=400, read=ReadOptions(block_bytes=2048))
    from streamtok.errors import InputFormatError

    with pytest.raises(InputFormatError, match=r"in\.txt: the input changed while it was tokenized"):
        tokenize_files([str(src)], str(out), config=cfg, workers=1, progress=False)
    assert not json.loads((out / "manifest.json").read_text())["complete"]


@pytest.fixture
def tasks_done(tmp_path):
    src = write_txt(tmp_path / "in.txt", make_docs(200, seed=5))
    out = tmp_path / "out"
    for i in range(2):
        assert run_cli(["tokenize", *_args(src, out), "--num-tasks", "2", "--task-index", str(i), "--unit-size", "2000"]) == 0
    units = sorted((out / TASK_DIR).glob("unit_*.npy"))
    assert len(units) >= 2
    return out, units


def _finalize_fails(out, capsys, expect):
    capsys.readouterr()
    assert run_cli(["tokenize", "--finalize", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err, err
    assert not (out / "manifest.json").exists() or not json.loads((out / "manifest.json").read_text())["complete"]


def test_finalize_refuses_altered_unit_tokens(tasks_done, capsys):
    out, units = tasks_done
    tokens = np.load(units[1])
    tokens[5] = (int(tokens[5]) + 1) % 50000
    np.save(units[1], tokens)
    _finalize_fails(out, capsys, f"{units[1].name}: its tokens do not match the checksum its task recorded")


def test_finalize_refuses_a_unit_of_another_dtype(tasks_done, capsys):
    out, units = tasks_done
    tokens = np.load(units[0]).astype(np.int64)
    tokens[3] = 70_000  # would wrap to 4464 as uint16
    np.save(units[0], tokens)
    _finalize_fails(out, capsys, f"{units[0].name}: holds int64")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"source": "0"}'])
def test_finalize_names_a_corrupt_unit_json(tasks_done, capsys, text):
    out, units = tasks_done
    record = units[0].with_suffix(".json")
    record.write_text(text)
    _finalize_fails(out, capsys, f"{record.name}: ")


def test_finalize_names_a_corrupt_plan(tasks_done, capsys):
    out, _ = tasks_done
    plan = out / TASK_DIR / "plan.json"
    saved = json.loads(plan.read_text())
    saved["job"] = {"paths": 5}
    plan.write_text(json.dumps(saved))
    _finalize_fails(out, capsys, "plan.json: not a task plan this streamtok can use")
    os.unlink(plan)
