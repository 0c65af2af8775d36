"""The tokenize manifest: settings, shards, totals, and the resume point of an unfinished run.

``<out>/manifest.json`` is written atomically at the start, after every shard, and at the end.
While a run is unfinished it holds ``"complete": false`` and a ``"resume"`` block: the input,
the chunk boundary in it and the tokens of that chunk already in shards, the totals before
that chunk, and the shard sink's state. Nothing in it depends on time or on the number of
workers, so an interrupted-and-resumed run ends with the same manifest as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import StateMismatchError
from .._atomic import write_json_atomic
from .sources import STDIN, input_format

MANIFEST = "manifest.json"
VERSION = 1
_TOTALS = ("n_docs", "n_chars", "n_bytes")


@dataclass(frozen=True)
class Checkpoint:
    """Where a run continues: input ``source`` at chunk boundary ``start`` (line ``line``),
    skipping the first ``skip`` tokens of that chunk; ``totals`` count what came before it."""

    source: int
    start: int
    line: int
    skip: int
    totals: dict[str, int]
    sink: dict[str, Any] | None
    shards: tuple[dict[str, Any], ...]

    @classmethod
    def start_of_run(cls) -> Checkpoint:
        return cls(0, 0, 1, 0, {k: 0 for k in _TOTALS}, None, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "start": self.start, "line": self.line, "skip": self.skip,
            "totals": self.totals, "sink": self.sink,
        }


def source_entries(inputs: list[str], fmt: str) -> list[dict[str, Any]]:
    """The identity of each input: absolute path, format, size and mtime (stdin: none).

    Args:
        inputs: the input paths.
        fmt: the ``--format`` asked for.
    """
    out = []
    for path in inputs:
        if path == STDIN:
            out.append({"path": STDIN, "format": input_format(path, fmt), "nbytes": None, "mtime_ns": None})
            continue
        st = os.stat(path)
        out.append({"path": os.path.abspath(path), "format": input_format(path, fmt), "nbytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def load_resume(path: str, settings: dict[str, Any]) -> tuple[dict[str, Any] | None, Checkpoint | None]:
    """Read an earlier run's manifest: ``(manifest, None)`` if complete, ``(None, checkpoint)`` if not.

    Args:
        path: the manifest file (absent: ``(None, None)``, a fresh start).
        settings: this run's settings; they must equal the saved ones.

    Raises:
        StateMismatchError: the directory holds a run with other settings or other inputs.
    """
    if not os.path.exists(path):
        return None, None
    try:
        with open(path) as f:
            saved = json.load(f)
        saved["complete"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateMismatchError(
            f"{path}: not a readable tokenize manifest ({exc}); delete it and the shards beside it to start over"
        ) from None
    for key, value in settings.items():
        old = saved.get(key)
        if old == value:
            continue
        if key == "sources" and isinstance(old, list) and len(old) == len(value):
            i = next(i for i, (a, b) in enumerate(zip(old, value)) if a != b)
            key, old, value = f"input #{i} ({value[i]['path']})", old[i], value[i]
        raise StateMismatchError(
            f"{path}: this directory holds a tokenize run made with {key} = {old!r}, "
            f"but this run has {value!r}; use another --out directory, or delete its shards "
            "and manifest.json to start over"
        )
    if saved["complete"]:
        return saved, None
    r = saved.get("resume")
    if r is None:
        return None, None
    return None, Checkpoint(r["source"], r["start"], r["line"], r["skip"], r["totals"], r["sink"], tuple(saved["shards"]))


def write_manifest(
    out_dir: str,
    settings: dict[str, Any],
    shards: list[dict[str, Any]],
    resume: Checkpoint | None,
    *,
    totals: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Write ``<out_dir>/manifest.json``: unfinished (with ``resume``) or final (with ``totals``).

    Args:
        out_dir: the output directory.
        settings: the run's settings (encoding, dtype, sources...).
        shards: the shards written so far, in order.
        resume: where to continue; ``None`` for the final manifest.
        totals: ``n_tokens``, ``n_docs``, ``n_chars``, ``n_bytes`` of the whole run (final only).
    """
    manifest: dict[str, Any] = {"version": VERSION, "complete": resume is None, **settings}
    splits = {}
    for split in ("val", "train"):
        mine = [s for s in shards if s["split"] == split]
        splits[split] = {
            "n_shards": len(mine),
            "n_tokens": sum(s["n_tokens"] for s in mine),
            "n_docs": sum(s["n_docs"] for s in mine),
        }
    manifest["splits"] = splits
    if totals is not None:
        manifest.update({k: totals[k] for k in ("n_tokens", *_TOTALS)})
    manifest["shards"] = shards
    if resume is not None:
        manifest["resume"] = resume.to_json()
    write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)
    return manifest
