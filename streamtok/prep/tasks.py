"""``--num-tasks N --task-index I`` and ``--finalize``: tokenize as N independent tasks, then assemble.

For Slurm arrays and Kubernetes indexed jobs: every task plans the same work units
(:mod:`.units`; the plan depends on the inputs and settings, not on N), encodes the contiguous
share ``[I*K//N, (I+1)*K//N)`` of the K units, and writes each unit's tokens to
``<out>/.streamtok-tasks/unit_000123.npy`` and then its counts to ``unit_000123.json``, both
atomically; a unit whose ``.json`` exists is done, so a rerun (with any N) redoes only the
missing ones. ``streamtok tokenize --finalize OUT`` then, under the output directory's lock,
feeds the units in order to the same shard writer as a one-process run -- so the shards and
manifest are byte-identical to it -- resuming from its checkpoint if killed, and removes the
task directory at the end.

Data movement per token: the unit files hold the tokens once (2 or 4 bytes), written by the
tasks and read once by ``--finalize``, which writes them once more as shards; ``--finalize``
is a sequential copy (~1 GB/s), minutes for 100B tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from .._atomic import atomic_write, write_json_atomic
from ..errors import ConfigError, StateMismatchError
from .outdir import lock_out_dir, prepare_out_dir
from .units import UNIT_BYTES, Piece, Unit, check_separator, plan_units, run_unit

TASK_DIR = ".streamtok-tasks"
PLAN = "plan.json"


def tokenize_task(
    inputs: list[str], out_dir: str, *, config: Any, num_tasks: int, task_index: int,
    unit_bytes: int = UNIT_BYTES, progress: bool = True,
) -> list[int]:
    """Encode task ``task_index`` of ``num_tasks``' share of the units into ``<out_dir>/.streamtok-tasks``.

    Args:
        inputs: as for :func:`~.tokenize.tokenize_files` (no stdin).
        out_dir: the output directory every task and ``--finalize`` share.
        config: the :class:`~.tokenize.TokenizeConfig`; every task must pass the same.
        num_tasks: how many tasks share the work.
        task_index: this task, ``0 <= task_index < num_tasks``.
        unit_bytes: bytes of text per unit (every task must pass the same).
        progress: show a progress bar.

    Returns:
        The indices of the units this task encoded (skipping those already done).

    Raises:
        ConfigError: bad task numbers, or stdin; StateMismatchError: the directory holds
        units of other settings or inputs.
    """
    from .tokenize import check_inputs_unchanged, prepare_run

    if num_tasks < 1 or not 0 <= task_index < num_tasks:
        raise ConfigError(f"--task-index must be in [0, --num-tasks) = [0, {num_tasks}), not {task_index}")
    run = prepare_run(inputs, config)
    check_separator(config.read, run.paths)
    paths = [os.path.abspath(p) for p in run.paths]  # --finalize may run from another directory
    run = replace(run, paths=paths, job=replace(run.job, paths=tuple(paths)))
    prepare_out_dir(out_dir)
    work = os.path.join(out_dir, TASK_DIR)
    os.makedirs(work, exist_ok=True)
    plan = {"version": 1, "unit_bytes": unit_bytes, "settings": run.settings, "paths": run.paths, "job": _job_json(run.job)}
    _agree(os.path.join(work, PLAN), plan)
    units = plan_units(run.paths, run.sizes, config.read, unit_bytes)
    k = len(units)
    mine = units[task_index * k // num_tasks : (task_index + 1) * k // num_tasks]
    from tqdm import tqdm

    done = []
    for unit in tqdm(mine, desc=f"task {task_index}/{num_tasks}", unit="unit", disable=not progress):
        if os.path.exists(_unit_path(work, unit.index, "json")):
            continue
        piece = run_unit(run.job, unit)
        tokens = np.ascontiguousarray(piece.tokens)
        with atomic_write(_unit_path(work, unit.index, "npy")) as f:
            np.lib.format.write_array(f, tokens, allow_pickle=False)
        check_inputs_unchanged(run)  # a unit read from a changing input is not marked done
        counts = {k: getattr(piece, k) for k in ("source", "start", "end", "n_docs", "n_chars", "n_bytes")}
        write_json_atomic(
            _unit_path(work, unit.index, "json"),
            {**counts, "n_tokens": len(tokens), "dtype": tokens.dtype.name, "sha256": _tokens_sha256(tokens)},
        )
        done.append(unit.index)
    print(f"task {task_index} of {num_tasks}: units {mine[0].index if mine else '-'}..{mine[-1].index if mine else '-'} "
          f"of {k} done in {work}; run `streamtok tokenize --finalize {out_dir}` when every task has finished")
    return done


def finalize(out_dir: str, *, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Assemble the units written by all tasks into shards and the manifest, as one process would write them.

    Args:
        out_dir: the directory the tasks wrote to.
        progress: show a progress bar.
        overwrite: as for :func:`~.tokenize.tokenize_files`.

    Raises:
        ConfigError: no task plan there, or units missing (named, with the tasks to rerun).
    """
    from ._encode import EncodeJob
    from .sources import ReadOptions
    from .tokenize import Run, TokenizeConfig, open_out, write_all

    work = os.path.join(out_dir, TASK_DIR)
    plan = _read_plan(work)
    try:
        settings = plan["settings"]
        job = EncodeJob(**{**plan["job"], "paths": tuple(plan["job"]["paths"]), "opts": ReadOptions(**plan["job"]["opts"])})
        config = TokenizeConfig(prefix=settings["prefix"], shard_format=settings["shard_format"])
        dtype = str(np.dtype(settings["dtype"]))
        sizes = [os.path.getsize(p) for p in plan["paths"]]
        units = plan_units(plan["paths"], sizes, job.opts, plan["unit_bytes"])
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise StateMismatchError(
            f"{os.path.join(work, PLAN)}: not a task plan this streamtok can use ({type(exc).__name__}: {exc}); "
            f"delete {work} and rerun the tasks"
        ) from None
    missing = [u.index for u in units if not os.path.exists(_unit_path(work, u.index, "json"))]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ConfigError(
            f"--finalize {out_dir}: {len(missing)} of {len(units)} units are not done yet (units {shown}); "
            "wait for the tasks, or rerun the tasks that hold them (a rerun skips the units already done)"
        )
    lock = lock_out_dir(out_dir)
    try:
        ckpt, done = open_out(out_dir, config, settings, overwrite)
        if done is None:
            run = Run(plan["paths"], sizes, settings, job)
            done = write_all(out_dir, run, ckpt, _pieces(work, units, ckpt.source, ckpt.start, dtype), progress)
        shutil.rmtree(work, ignore_errors=True)
        return done
    finally:
        lock.release()


def _pieces(work: str, units: list[Unit], source: int, start: int, dtype: str) -> Iterator[Piece]:
    # Units wholly before the checkpoint are passed over; the one it points into comes whole
    # (the writer skips the checkpoint's tokens of it). Nothing a task wrote is trusted: the
    # counts must be ints, the tokens of the run's dtype and of the checksum the task recorded.
    for unit in units:
        c = _unit_counts(_unit_path(work, unit.index, "json"))
        if c["source"] < source or (c["source"] == source and c["start"] < start):
            continue
        npy = _unit_path(work, unit.index, "npy")
        try:
            tokens = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StateMismatchError(f"{npy}: unreadable ({exc}); delete it and its .json and rerun its task") from None
        problem = None
        if tokens.ndim != 1 or tokens.dtype != np.dtype(dtype) or c["dtype"] != dtype:
            problem = f"holds {tokens.dtype}{list(tokens.shape)} tokens, the run writes 1-D {dtype}"
        elif len(tokens) != c["n_tokens"]:
            problem = f"holds {len(tokens)} tokens, its .json says {c['n_tokens']}"
        elif _tokens_sha256(tokens) != c["sha256"]:
            problem = "its tokens do not match the checksum its task recorded (altered or damaged)"
        if problem:
            raise StateMismatchError(f"{npy}: {problem}; delete it and its .json and rerun its task")
        yield Piece(c["source"], c["start"], c["end"], tokens, c["n_docs"], c["n_chars"], c["n_bytes"])


_COUNTS = ("source", "start", "end", "n_docs", "n_chars", "n_bytes", "n_tokens")


def _unit_counts(path: str) -> dict[str, Any]:
    """A unit's ``.json``, checked: every count a non-negative int, a dtype name and a sha256."""
    c = _load(path)
    if not isinstance(c, dict):
        raise StateMismatchError(f"{path}: not a unit record (a JSON object); delete it and rerun its task")
    for key in _COUNTS:
        if type(c.get(key)) is not int or c[key] < 0:
            raise StateMismatchError(f"{path}: {key} = {c.get(key)!r} is not a non-negative int; delete it and rerun its task")
    digest = c.get("sha256")
    if not isinstance(c.get("dtype"), str) or not (isinstance(digest, str) and len(digest) == 64):
        raise StateMismatchError(
            f"{path}: no token dtype and checksum (written by an older streamtok, or edited); delete it and rerun its task"
        )
    return c


def _tokens_sha256(tokens: np.ndarray) -> str:
    h = hashlib.sha256()
    step = 1 << 22
    for a in range(0, len(tokens), step):
        h.update(np.ascontiguousarray(tokens[a : a + step]).tobytes())
    return h.hexdigest()


def _unit_path(work: str, index: int, ext: str) -> str:
    return os.path.join(work, f"unit_{index:06d}.{ext}")


def _job_json(job: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(job), "paths": list(job.paths)}


def _agree(path: str, plan: dict[str, Any]) -> None:
    # The first task writes the plan; every other task (and a rerun) must bring the same one.
    if not os.path.exists(path):
        write_json_atomic(path, plan)
        return
    saved = _load(path)
    for key in ("unit_bytes", "settings", "paths"):
        if saved.get(key) != plan[key]:
            raise StateMismatchError(
                f"{path}: the tasks in this directory were started with other {key} "
                f"({str(saved.get(key))[:200]} vs {str(plan[key])[:200]}); give every task the same command, "
                f"or delete {os.path.dirname(path)} to start over"
            )


def _read_plan(work: str) -> dict[str, Any]:
    path = os.path.join(work, PLAN)
    if not os.path.exists(path):
        raise ConfigError(
            f"--finalize: {path} does not exist; run the tasks first "
            "(streamtok tokenize INPUTS --out DIR --num-tasks N --task-index I)"
        )
    plan = _load(path)
    if not isinstance(plan, dict) or not {"settings", "paths", "job", "unit_bytes"} <= set(plan):
        raise StateMismatchError(f"{path}: not a task plan written by streamtok tokenize; delete {work} and rerun the tasks")
    return plan


def _load(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise StateMismatchError(f"{path}: unreadable ({exc}); delete it and rerun the tasks") from None

