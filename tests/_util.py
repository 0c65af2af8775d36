"""Shared test helpers: tiny shards whose tokens are their own positions, and the resume checker."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from streamtok._formats import write_shard


def make_shards(
    directory: str | os.PathLike,
    lengths: list[int],
    *,
    kind: str = "llmc",
    dtype: type = np.uint32,
    prefix: str = "shard",
    start: int = 0,
) -> np.ndarray:
    """Write shards whose token ``i`` is ``start + i`` (so a window tells where it began)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".npy" if kind == "npy" else ".bin"
    pos, parts = start, []
    for k, n in enumerate(lengths):
        tokens = np.arange(pos, pos + n, dtype=np.int64).astype(dtype)
        write_shard(directory / f"{prefix}_{k:06d}{suffix}", tokens, kind=kind)
        parts.append(tokens)
        pos += n
    return np.concatenate(parts)


def batch_hash(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha1(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def take(loader, n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for batch in loader:
        out.append(batch)
        if n is not None and len(out) >= n:
            break
    return out


def roundtrip(state: dict) -> dict:
    """What a checkpoint written as JSON and read back gives."""
    return json.loads(json.dumps(state))


def check_resume(factory: Callable[[], object], midpoints: list[int]) -> int:
    """Resume from each midpoint (and the start and end) and compare with the full stream.

    ``factory`` builds a fresh loader; its whole pass is the reference. Returns its length.
    """
    full = [batch_hash(x, y) for x, y in factory()]
    for k in sorted({0, *midpoints, len(full)}):
        first = factory()
        head = [batch_hash(x, y) for x, y in take(first, k)] if k else []
        state = roundtrip(first.state_dict())
        resumed = factory()
        resumed.load_state_dict(state)
        tail = [batch_hash(x, y) for x, y in resumed]
        assert head + tail == full or (k == len(full) and head == full), f"resume at step {k} diverged"
    return len(full)
