"""A saved sampler position, read strictly: every key, type and range checked before use.

A checkpoint is read from disk and may be hand-edited, truncated or another program's; a
wrong value must be refused naming the key, never turned into a ``KeyError``, a
``TypeError`` or, worse, a position that silently skips data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import StateMismatchError

STATE_VERSION = 2  # 2: the data fingerprint samples the shards' content (1: names and sizes only)
MAX_EPOCH = 1 << 40  # a saved epoch beyond this is corrupt, not a long run


@dataclass(frozen=True)
class SavedPosition:
    """What a valid state says: the position, where its pass ends, and whether the pass was seen to end."""

    version: int
    epoch: int
    offset: int
    end_epoch: int | None
    pass_ended: bool


def read_field(state: Any, key: str, kind: type, where: str = "state") -> Any:
    """``state[key]`` checked to be of ``kind`` (ints: any integer but bool), else a named error."""
    if not isinstance(state, dict):
        raise StateMismatchError(f"{where} is a {type(state).__name__}, not a dict; pass the dict returned by state_dict()")
    if key not in state:
        raise StateMismatchError(f"{where} has no {key!r} key; pass the dict returned by state_dict()")
    value = state[key]
    if kind is int:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        value = int(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise StateMismatchError(f"{where} key {key!r} is {value!r} ({type(value).__name__}), not {kind.__name__}")
    return value


def read_position(state: Any, config: dict[str, Any], n_samples: int, *, legacy_data: str) -> SavedPosition:
    """Check ``state`` against the current ``config`` and an epoch of ``n_samples``; return its position.

    Args:
        state: a sampler ``state_dict()``, as read back from a checkpoint.
        config: the current sampler's configuration (mode, seed, seq_len, data, n_tokens).
        n_samples: samples in one epoch now.
        legacy_data: the data fingerprint as version-1 states computed it.

    Raises:
        StateMismatchError: another configuration or data, or a corrupt state; names the key.
    """
    version = read_field(state, "version", int)
    if version not in (1, STATE_VERSION):
        raise StateMismatchError(f"sampler state version {version} is not one this streamtok reads (1 or {STATE_VERSION})")
    saved = read_field(state, "config", dict)
    current = dict(config, data=legacy_data) if version == 1 else config  # 1: before content sampling
    for key, value in current.items():
        if read_field(saved, key, type(value), "config") != value:
            raise StateMismatchError(
                f"state_dict was saved with {key}={saved[key]!r} but this loader has "
                f"{key}={value!r}; resuming would read other windows. "
                "Load it into a loader built with the same settings and data."
            )
    epoch, offset = read_field(state, "epoch", int), read_field(state, "offset", int)
    if not 0 <= epoch < MAX_EPOCH:
        raise StateMismatchError(f"state key 'epoch' is {epoch}: not a position (0 <= epoch < {MAX_EPOCH})")
    if not 0 <= offset <= n_samples:
        raise StateMismatchError(f"state key 'offset' is {offset}: not a position in an epoch of {n_samples} windows")
    read_field(state, "end_epoch", object)
    end = state["end_epoch"]
    if end is not None:
        end = read_field(state, "end_epoch", int)
        finished = end == epoch and offset == 0  # saved after the last step of its pass
        if not (end > epoch or finished) or end > epoch + MAX_EPOCH:
            raise StateMismatchError(f"state key 'end_epoch' is {end}: a pass cannot end before its position (epoch {epoch})")
    for key in ("batch_size", "world_size"):
        read_field(state, key, int)
    ended = read_field(state, "pass_ended", bool) if "pass_ended" in state else False
    return SavedPosition(version, epoch, offset, end, ended)
