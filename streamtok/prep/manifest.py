"""The tokenize manifest: settings, shards, totals, and the resume point of an unfinished run.

``<out>/manifest.json`` is written atomically at the start, after every shard, and at the end.
While a run is unfinished it holds ``"complete": false`` and a ``"resume"`` block: the input,
the chunk boundary in it and the tokens of that chunk already in shards, the totals before
that chunk, and the shard sink's state. Nothing in it depends on time or on the number of
workers, so an interrupted-and-resumed run ends with the same manifest as an uninterrupted one.

Each shard's entry lists its document index beside it (``"docidx": "<shard>.docidx"`` and
``"docidx_sha256"``; see :mod:`.shardsink`). Entries of a manifest written before tokenize wrote
indexes have neither; they are still accepted (the loader builds those indexes on first use).

Nothing read back is trusted: every shard name must be one this command writes
(``<prefix>_{val,train}_NNNNNN.<format>``, no separators), with its own sidecar name, every
digest a sha256 hex string, and every number in the resume block
must be a non-negative int in range, or the manifest is refused naming the key. When stdin is
an input, the resume block holds the sha256 of the stdin bytes before the resume point, and a
rerun fed other bytes is refused.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from .._atomic import write_json_atomic
from ..documents.boundary import MANIFEST  # the name the loader reads the boundary token from
from ..documents.sidecar import SIDECAR_SUFFIX
from ..errors import StateMismatchError
from .sources import STDIN, input_format

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
    stdin_sha256: str | None = None  # of stdin's bytes before ``start`` when ``source`` is stdin

    @classmethod
    def start_of_run(cls) -> Checkpoint:
        return cls(0, 0, 1, 0, {k: 0 for k in _TOTALS}, None, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "start": self.start, "line": self.line, "skip": self.skip,
            "totals": self.totals, "sink": self.sink, "stdin_sha256": self.stdin_sha256,
        }


def shard_name_pattern(prefix: str, shard_format: str) -> re.Pattern[str]:
    """The names this command writes: ``<prefix>_val_000000.bin``, ``<prefix>_train_000123.bin``.

    Args:
        prefix: the shard name prefix.
        shard_format: ``"bin"`` or ``"npy"``.
    """
    return re.compile(rf"{re.escape(prefix)}_(val|train)_\d{{6}}\.{re.escape(shard_format)}")


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
            f"but this run has {value!r}; use another --out directory, or pass --overwrite to start over"
        )
    _check_shards(path, saved.get("shards"), settings)
    if saved["complete"]:
        return saved, None
    r = saved.get("resume")
    if r is None:
        return None, None
    return None, _checkpoint(path, r, saved["shards"], len(settings["sources"]))


def _refuse(path: str, key: str, value: Any, want: str) -> StateMismatchError:
    return StateMismatchError(
        f"{path}: {key} = {value!r} is not {want}; the manifest was edited or is corrupt; "
        "delete it and the shards beside it to start over (or pass --overwrite)"
    )


def _count(path: str, key: str, value: Any, low: int = 0, high: int | None = None) -> int:
    if type(value) is not int or value < low or (high is not None and value >= high):
        span = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise _refuse(path, key, value, f"an int {span}")
    return value


def _check_shards(path: str, shards: Any, settings: dict[str, Any]) -> None:
    own = shard_name_pattern(settings["prefix"], settings["shard_format"])
    if not isinstance(shards, list):
        raise _refuse(path, "shards", shards, "a list")
    count = {"val": 0, "train": 0}
    for i, shard in enumerate(shards):
        name = shard.get("name") if isinstance(shard, dict) else None
        if not isinstance(name, str) or not own.fullmatch(name):
            raise _refuse(path, f"shards[{i}].name", name, f"a shard name of this run ({own.pattern})")
        split = name.split("_")[-2]
        if shard.get("split") != split:
            raise _refuse(path, f"shards[{i}].split", shard.get("split"), "the split in its name")
        # Shards are written val first, each split numbered from 0: the k-th of a split is number k.
        if int(name.split("_")[-1].split(".")[0]) != count[split] or (split == "val" and count["train"]):
            raise _refuse(path, f"shards[{i}].name", name, f"shard {count[split]} of split {split} (shards are listed in the order written)")
        count[split] += 1
        _count(path, f"shards[{i}].n_tokens", shard.get("n_tokens"), 1)
        indexed = "docidx" in shard or "docidx_sha256" in shard  # absent: written before tokenize wrote indexes
        if indexed and shard.get("docidx") != name + SIDECAR_SUFFIX:
            raise _refuse(path, f"shards[{i}].docidx", shard.get("docidx"), f"{name + SIDECAR_SUFFIX!r}, the document index beside it")
        for key in ("sha256", "docidx_sha256") if indexed else ("sha256",):
            digest = shard.get(key)
            if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                raise _refuse(path, f"shards[{i}].{key}", digest, "a sha256 hex digest")


def _checkpoint(path: str, r: Any, shards: list[dict[str, Any]], n_sources: int) -> Checkpoint:
    if not isinstance(r, dict):
        raise _refuse(path, "resume", r, "an object")
    for key in ("source", "start", "line", "skip", "totals", "sink"):
        if key not in r:
            raise _refuse(path, f"resume.{key}", None, "present")
    _count(path, "resume.source", r["source"], 0, n_sources)
    _count(path, "resume.start", r["start"])
    _count(path, "resume.line", r["line"])
    _count(path, "resume.skip", r["skip"])
    totals = r["totals"]
    if not isinstance(totals, dict) or set(totals) != set(_TOTALS):
        raise _refuse(path, "resume.totals", totals, f"an object of {', '.join(_TOTALS)}")
    for key in _TOTALS:
        _count(path, f"resume.totals.{key}", totals[key])
    sink = r["sink"]
    if sink is None and shards:
        raise _refuse(path, "resume.sink", sink, f"the writer's position after the {len(shards)} shards listed")
    if sink is not None:
        if not isinstance(sink, dict) or set(sink) != {"split", "next", "position"}:
            raise _refuse(path, "resume.sink", sink, "an object of split, next, position")
        if sink["split"] not in ("val", "train"):
            raise _refuse(path, "resume.sink.split", sink["split"], "'val' or 'train'")
        nxt = sink["next"]
        if not isinstance(nxt, dict) or set(nxt) != {"val", "train"}:
            raise _refuse(path, "resume.sink.next", nxt, "an object of val, train")
        for split in ("val", "train"):
            listed = sum(1 for s in shards if s["split"] == split)
            if type(nxt[split]) is not int or nxt[split] != listed:  # the next shard's number: anything else rewrites or skips shards
                raise _refuse(path, f"resume.sink.next.{split}", nxt[split], f"{listed}, the number of {split} shards listed")
        position = sum(s["n_tokens"] for s in shards)
        if type(sink["position"]) is not int or sink["position"] != position:
            raise _refuse(path, "resume.sink.position", sink["position"], f"{position}, the tokens of the shards listed")
    digest = r.get("stdin_sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise _refuse(path, "resume.stdin_sha256", digest, "a sha256 hex digest")
    return Checkpoint(r["source"], r["start"], r["line"], r["skip"], dict(totals), sink, tuple(shards), digest)


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
