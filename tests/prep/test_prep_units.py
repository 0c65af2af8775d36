"""Work units: cut points are split points of the whole file; units and tasks give the one-process output."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prep_helpers import make_docs, output_bytes, run_cli, write_txt

from streamtok.errors import ConfigError, StateMismatchError
from streamtok.prep.sources import ReadOptions
from streamtok.prep.tasks import TASK_DIR, finalize, tokenize_task
from streamtok.prep.tokenize import KILL_ENV, TokenizeConfig, tokenize_files
from streamtok.prep.units import plan_units, split_point_at


def split_points(data: bytes, sep: bytes) -> list[int]:
    # Where a left-to-right split of the whole file starts its pieces.
    points, pos = [0], 0
    for piece in data.split(sep)[:-1]:
        pos += len(piece) + len(sep)
        points.append(pos)
    return points


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet="ab\n", max_size=80),
    sep=st.sampled_from(["\n\n", "\n", "ab", "\n\n\n"]),
    pos=st.integers(0, 90),
)
def test_cut_is_the_first_split_point_at_or_after(tmp_path_factory, text, sep, pos):
    path = tmp_path_factory.mktemp("u") / "t.txt"
    data = text.encode()
    path.write_bytes(data)
    want = next((p for p in split_points(data, sep.encode()) if p >= pos), len(data))
    assert split_point_at(str(path), pos, sep.encode(), len(data)) == min(want, len(data))


def _tok(inputs, out, **kw):
    cfg = TokenizeConfig(shard_tokens=700, val_tokens=900, read=ReadOptions(**kw.pop("read", {})))
    return tokenize_files([str(p) for p in inputs], str(out), config=cfg, workers=1, progress=False, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("c")
    inputs = [write_txt(root / f"in{k}.txt", make_docs(150, seed=30 + k), sep="\n\n\n" if k else "\n\n") for k in range(2)]
    (root / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in make_docs(80, seed=33)))
    inputs.append(root / "c.jsonl")
    _tok(inputs, root / "one")
    return root, inputs


@pytest.mark.parametrize("num_tasks,unit_bytes", [(1, 10**6), (2, 700), (3, 400), (7, 1500)])
def test_array_tasks_then_finalize_equal_one_process(corpus, tmp_path, num_tasks, unit_bytes):
    root, inputs = corpus
    cfg = TokenizeConfig(shard_tokens=700, val_tokens=900)
    out = tmp_path / "out"
    for i in reversed(range(num_tasks)):  # any order
        tokenize_task([str(p) for p in inputs], str(out), config=cfg, num_tasks=num_tasks, task_index=i, unit_bytes=unit_bytes, progress=False)
    finalize(str(out), progress=False)
    assert output_bytes(out) == output_bytes(root / "one") and not (out / TASK_DIR).exists()


def test_finalize_refuses_missing_units_and_resumes_after_a_kill(corpus, tmp_path, monkeypatch, capsys):
    root, inputs = corpus
    args = [*map(str, inputs), "--out", str(tmp_path / "out"), "--shard-tokens", "700", "--val-tokens", "900", "--no-progress"]
    assert run_cli(["tokenize", *args, "--num-tasks", "3", "--task-index", "0", "--unit-size", "300"]) == 0
    assert run_cli(["tokenize", "--finalize", str(tmp_path / "out")]) == 2
    assert "units are not done yet" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")  # the index from the array job
    assert run_cli(["tokenize", *args, "--num-tasks", "3", "--unit-size", "300"]) == 0
    assert run_cli(["tokenize", *args, "--num-tasks", "3", "--task-index", "2", "--unit-size", "400"]) == 2
    assert "started with other unit_bytes" in capsys.readouterr().err
    assert run_cli(["tokenize", *args, "--num-tasks", "3", "--task-index", "2", "--unit-size", "300"]) == 0

    from streamtok.prep import tokenize as tokenize_mod

    class Killed(Exception):
        pass

    def kill(pid, sig):
        raise Killed

    monkeypatch.setenv(KILL_ENV, "2")
    monkeypatch.setattr(tokenize_mod.os, "kill", kill)
    with pytest.raises(Killed):
        finalize(str(tmp_path / "out"), progress=False)
    monkeypatch.delenv(KILL_ENV)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is False
    assert run_cli(["tokenize", "--finalize", str(tmp_path / "out"), "--no-progress"]) == 0
    assert output_bytes(tmp_path / "out") == output_bytes(root / "one")


def test_task_arguments_checked(corpus, tmp_path, capsys):
    root, inputs = corpus
    cfg = TokenizeConfig()
    with pytest.raises(ConfigError, match=r"--task-index must be in \[0, --num-tasks\)"):
        tokenize_task([str(inputs[0])], str(tmp_path / "o"), config=cfg, num_tasks=2, task_index=2)
    with pytest.raises(ConfigError, match="stdin"):
        tokenize_task(["-"], str(tmp_path / "o"), config=cfg, num_tasks=2, task_index=0)
    with pytest.raises(ConfigError, match="overlaps itself"):
        tokenize_task([str(inputs[0])], str(tmp_path / "o"), config=TokenizeConfig(read=ReadOptions(separator="aba")), num_tasks=2, task_index=0)
    assert run_cli(["tokenize", "--finalize", str(tmp_path / "nothing")]) == 2
    assert "run the tasks first" in capsys.readouterr().err
    (tmp_path / "bad" / TASK_DIR).mkdir(parents=True)
    (tmp_path / "bad" / TASK_DIR / "plan.json").write_text("[]")
    with pytest.raises(StateMismatchError, match="not a task plan"):
        finalize(str(tmp_path / "bad"))


def test_units_cover_each_input(tmp_path):
    paths = [write_txt(tmp_path / f"{k}.txt", make_docs(20, seed=k)) for k in range(2)]
    sizes = [os.path.getsize(p) for p in paths]
    units = plan_units([str(p) for p in paths], sizes, ReadOptions(), 100)
    assert [u.index for u in units] == list(range(len(units)))
    for s, size in enumerate(sizes):
        mine = [u for u in units if u.source == s]
        assert mine[0].lo == 0 and mine[-1].hi == size and all(a.hi == b.lo for a, b in zip(mine, mine[1:]))
    assert np.all(np.diff([u.source for u in units]) >= 0)


def test_parquet_units_are_row_groups_and_match_one_process(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    docs = make_docs(300, seed=34)
    pq.write_table(pa.table({"text": docs}), tmp_path / "d.parquet", row_group_size=70)
    cfg = TokenizeConfig(shard_tokens=700)
    tokenize_files([str(tmp_path / "d.parquet")], str(tmp_path / "one"), config=cfg, workers=1, progress=False)
    units = plan_units([str(tmp_path / "d.parquet")], [0], ReadOptions())
    assert [(u.lo, u.hi) for u in units] == [(0, 70), (70, 140), (140, 210), (210, 280), (280, 300)]
    for i in range(2):
        tokenize_task([str(tmp_path / "d.parquet")], str(tmp_path / "out"), config=cfg, num_tasks=2, task_index=i, progress=False)
    finalize(str(tmp_path / "out"), progress=False)
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "one")
