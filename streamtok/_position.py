"""Saved sampler states, read strictly: every key, type and range checked before anything changes.

A checkpoint is read from disk and may be hand-edited, truncated or another program's; a
wrong value must be refused naming the key, never turned into a ``KeyError``, a
``TypeError``, an ``OverflowError`` at the next batch or, worse, a position that silently
skips or repeats data. One reader serves every sampler (windows, ``mask``/``bos`` rows,
packed rows, mixtures, the ``torchdata.nodes`` wrappers): each ``read_*`` function below
checks a whole state and returns what it says, so a sampler's ``load_state_dict`` changes
nothing until the state is known to be good. What is checked: the state's exact set of keys
(a key too many or too few is another kind of state), each value's type (integers are ints,
never bools, floats or strings), each position's range, and the configuration against the
loader's, key by key. What is not: that a well-formed position is the one a run really
reached (a plausible edit, e.g. another offset inside the epoch, is a valid position).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from .errors import BoundaryMismatchError, StateMismatchError

STATE_VERSION = 2  # 2: the data fingerprint samples the shards' content (1: names and sizes only)
MAX_EPOCH = 1 << 40  # a saved epoch beyond this is corrupt, not a long run
MAX_COUNT = 1 << 53  # steps, windows, rows: beyond this a float loses them and int64 sums overflow
ANY = object()  # a config value that is type-checked (a str) but not compared


def _fail(message: str) -> NoReturn:
    raise StateMismatchError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class Fields:
    """One level of a saved state: a dict whose keys are read strictly.

    Args:
        state: the dict (anything else is refused).
        where: how messages name this level (``"state"``, ``"state['sources']['web']"``).
    """

    def __init__(self, state: Any, where: str = "state"):
        if not isinstance(state, dict):
            _fail(f"{where} is a {type(state).__name__}, not a dict; pass the dict returned by state_dict()")
        self.state, self.where = state, where

    def keys(self, required: Sequence[str], optional: Sequence[str] = ()) -> None:
        """Refuse a missing required key, or a key that is neither required nor optional."""
        for key in required:
            if key not in self.state:
                _fail(f"{self.where} has no {key!r} key; pass the dict returned by state_dict()")
        extra = sorted(map(repr, set(self.state) - set(required) - set(optional)))
        if extra:
            _fail(f"{self.where} has unexpected key(s) {', '.join(extra)}: not a state of this loader's kind")

    def raw(self, key: str) -> Any:
        if key not in self.state:
            _fail(f"{self.where} has no {key!r} key; pass the dict returned by state_dict()")
        return self.state[key]

    def _wrong(self, key: str, value: Any, what: str) -> NoReturn:
        _fail(f"{self.where} key {key!r} is {value!r} ({type(value).__name__}), not {what}")

    def int(self, key: str, lo: int = 0, hi: int = MAX_COUNT, *, none: bool = False) -> int | None:
        """An integer in ``[lo, hi]`` (``None`` too, if ``none``)."""
        value = self.raw(key)
        if value is None and none:
            return None
        if not _is_int(value):
            self._wrong(key, value, "an int" + (" or None" if none else ""))
        if not lo <= value <= hi:
            _fail(f"{self.where} key {key!r} is {value}: out of range [{lo}, {hi}]")
        return int(value)

    def real(self, key: str, lo: float = 0.0, hi: float = float(MAX_COUNT)) -> float:
        """A finite number (int or float, not bool) in ``[lo, hi]``."""
        value = self.raw(key)
        if not (_is_int(value) or isinstance(value, (float, np.floating))) or not math.isfinite(value):
            self._wrong(key, value, "a finite number")
        if not lo <= value <= hi:
            _fail(f"{self.where} key {key!r} is {value}: out of range [{lo}, {hi}]")
        return float(value)

    def str(self, key: str, *, none: bool = False) -> str | None:
        value = self.raw(key)
        if (value is None and none) or isinstance(value, str):
            return value
        self._wrong(key, value, "a str" + (" or None" if none else ""))

    def bool(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            self._wrong(key, value, "a bool")
        return value

    def dict(self, key: str) -> Fields:
        """The nested level under ``key``."""
        return Fields(self.raw(key), f"{self.where}[{key!r}]")

    def same(self, current: Mapping[str, Any], legacy: Mapping[str, Any] | None = None) -> None:
        """This level equals ``current`` key by key (exact keys, same types); ``ANY``: a str, any value.

        Args:
            current: what the loader has now.
            legacy: values that replace ``current``'s for the comparison (older states).
        """
        for key, value in current.items():
            if value is ANY:
                self.str(key)
                continue
            if key not in self.state:
                _fail(
                    f"{self.where} has no {key!r} key, but this loader has {key}={value!r}; "
                    "load a state saved by a loader with the same settings"
                )
            want = value if legacy is None else legacy.get(key, value)
            saved = self.state[key]
            same_type = _is_int(saved) if _is_int(want) else (saved is None if want is None else type(saved) is type(want))
            if not same_type or saved != want:
                _fail(
                    f"{self.where} key {key!r}: state_dict was saved with {key}={saved!r} but this loader has {key}={want!r}; "
                    "resuming would read other windows. Load it into a loader built with the same settings and data."
                )
        extra = sorted(set(self.state) - set(current))
        if extra:
            shown = ", ".join(f"{k}={self.state[k]!r}" for k in extra)
            _fail(
                f"state_dict was saved with {shown}, which this loader does not have (another documents "
                "mode or kind of loader); load it into a loader built with the same settings"
            )


MAX_TOKEN = 1 << 62  # a saved token id beyond this is corrupt
# (token, where it came from) of a loader that splits rows at documents; None: it splits none
BoundaryNow = tuple[int | None, str] | None


def boundary_mismatch(where: str, saved: int | None, token: int | None, found: str) -> BoundaryMismatchError:
    """The error of a resume whose rows were split at token ``saved`` by a loader now at ``token``.

    Args:
        where: how the message names the saved level (``"state['config']"``).
        saved, token: the saved and the current token (``None``: Megatron ``.idx`` starts).
        found: where the current token came from (:meth:`Boundary.describe`).
    """
    return BoundaryMismatchError(
        f"{where} key 'boundary': the state was saved by a loader that split documents at token {saved!r}, but "
        f"this loader splits them at token {token!r} ({found}): resuming would read other rows. The data's "
        f"tokenize manifest may name another token now, or bos_id is given differently; pass bos_id={saved!r} "
        "to resume the saved run, or start a new run without this state"
    )


def boundary_config(
    f: Fields, config: dict[str, Any], boundary: BoundaryNow, legacy: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The configuration (and legacy values) a saved ``config`` level is compared with, its
    boundary token checked first.

    A loader that splits rows at documents records the token it split at (``"boundary"``,
    ``None`` for a Megatron ``.idx``): ``bos_id=None`` means "what the data says", and the data
    (the tokenize manifest beside the shards) may say another token at resume, which would
    silently change every row. A saved token unlike the current one is a
    :class:`BoundaryMismatchError` naming both. A state without the key (saved before it was
    recorded) is not checked for it, as before; with it, ``bos_id`` (how the token was found) is
    not compared: the same token gives the same rows. A loader that splits no documents
    (``"stream"``, which reads a ``"mask"`` state's windows) ignores a saved token.

    Args:
        f: the saved ``config`` level.
        config: the current configuration (with ``"boundary"`` when ``boundary`` is not ``None``).
        boundary: the current token and where it came from; ``None``: this loader has none.
        legacy: values replacing ``config``'s for the comparison (see :meth:`Fields.same`).
    """
    config = dict(config)
    if "boundary" not in f.state:
        config.pop("boundary", None)
        return config, legacy
    saved = f.int("boundary", 0, MAX_TOKEN, none=True)
    if boundary is None:
        config["boundary"] = saved
        return config, legacy
    token, found = boundary
    if saved != token:
        raise boundary_mismatch(f.where, saved, token, found)
    if "bos_id" in config and "bos_id" in f.state:
        legacy = {**(legacy or {}), "bos_id": f.int("bos_id", 0, MAX_TOKEN, none=True)}
    return config, legacy


def _end_epoch(f: Fields, epoch: int, at_start: bool) -> int | None:
    end = f.int("end_epoch", 0, MAX_EPOCH * 2, none=True)
    if end is not None and not (end > epoch or (end == epoch and at_start)):
        _fail(f"state key 'end_epoch' is {end}: a pass cannot end before its position (epoch {epoch})")
    return end


def _placement(f: Fields) -> None:
    f.int("batch_size", 1)
    world = f.int("world_size", 1)
    if "rank" in f.state:
        f.int("rank", 0, world - 1)


@dataclass(frozen=True)
class SavedPosition:
    """What a valid window state says: the position, where its pass ends, and whether the pass was seen to end."""

    version: int
    epoch: int
    offset: int
    end_epoch: int | None
    pass_ended: bool


def read_field(state: Any, key: str, kind: type, where: str = "state") -> Any:
    """``state[key]`` checked to be of ``kind`` (ints: any integer but bool), else a named error."""
    f = Fields(state, where)
    if kind is int:
        return f.int(key, -MAX_COUNT * MAX_COUNT, MAX_COUNT * MAX_COUNT)
    value = f.raw(key)
    if not isinstance(value, kind):
        f._wrong(key, value, kind.__name__)
    return value


WINDOW_KEYS = ("version", "config", "epoch", "offset", "end_epoch", "batch_size", "world_size")


def read_position(
    state: Any, config: dict[str, Any], n_samples: int, *, legacy_data: str | None = None, boundary: BoundaryNow = None,
) -> SavedPosition:
    """Check a window sampler's ``state`` against the current ``config``; return its position.

    Args:
        state: a sampler ``state_dict()``, as read back from a checkpoint.
        config: the current sampler's configuration (mode, seed, seq_len, data, n_tokens; a
            ``bos`` sampler adds documents and bos_id).
        n_samples: samples in one epoch now.
        legacy_data: the data fingerprint as version-1 states computed it (``None``: none).
        boundary: the boundary token rows are split at and where it came from (``None``: no
            documents); see :func:`boundary_config`.

    Raises:
        BoundaryMismatchError: the state's rows were split at another boundary token.
        StateMismatchError: another configuration, data or kind of sampler, or a corrupt
            state; names the key.
    """
    f = Fields(state)
    version = f.int("version", 0, 1 << 31)
    if version not in (1, STATE_VERSION):
        _fail(f"sampler state version {version} is not one this streamtok reads (1 or {STATE_VERSION})")
    saved_config = f.dict("config")
    config, legacy = boundary_config(
        saved_config, config, boundary, {"data": legacy_data} if version == 1 and legacy_data is not None else None,
    )
    saved_config.same(config, legacy)
    f.keys(WINDOW_KEYS, ("rank", "pass_ended"))
    epoch = f.int("epoch", 0, MAX_EPOCH - 1)
    offset = f.int("offset", 0, n_samples)
    end = _end_epoch(f, epoch, offset == 0)
    _placement(f)
    ended = f.bool("pass_ended") if "pass_ended" in state else False
    return SavedPosition(version, epoch, offset, end, ended)


@dataclass(frozen=True)
class SavedPackPosition:
    """What a valid packed-rows state says."""

    epoch: int
    block: int
    row: int
    offset: int
    end_epoch: int | None
    pass_ended: bool | None


def read_pack_position(
    state: Any, config: dict[str, Any], *, version: int, n_blocks: int, max_rows: int, block_rows: Callable[[int, int], int],
    boundary: BoundaryNow = None,
) -> SavedPackPosition:
    """Check a packed-rows state against ``config``; return its position.

    Args:
        state: a :class:`~streamtok.documents.pack.PackSampler` ``state_dict()``.
        config: the current configuration.
        version: the state version this streamtok writes.
        n_blocks: blocks per epoch.
        max_rows: rows an epoch can hold at most (its tokens over the row length).
        block_rows: rows of ``(epoch, block)`` (packs that block: called last, on a checked position).
        boundary: the boundary token and where it came from (see :func:`boundary_config`).

    Raises:
        BoundaryMismatchError: the state's rows were split at another boundary token.
        StateMismatchError: another configuration or kind of sampler, or a corrupt state.
    """
    f = Fields(state)
    saved_config = f.dict("config")
    saved_config.same(*boundary_config(saved_config, config, boundary))
    saved_version = f.raw("version")
    if not _is_int(saved_version) or saved_version != version:
        _fail(f"state key 'version' is {saved_version!r}: not a packed-rows state of version {version}")
    f.keys(WINDOW_KEYS + ("block", "row"), ("rank", "pass_ended"))
    epoch = f.int("epoch", 0, MAX_EPOCH - 1)
    block, row = f.int("block", 0, n_blocks), f.int("row", 0, max_rows)
    offset = f.int("offset", 0, max_rows)
    end = _end_epoch(f, epoch, block == row == 0)
    _placement(f)
    ended = f.bool("pass_ended") if "pass_ended" in state else None
    if (block == n_blocks and row) or (block < n_blocks and row >= block_rows(epoch, block)):
        _fail(f"state position epoch={epoch}, block={block}, row={row} is out of range: block {block} has fewer rows")
    return SavedPackPosition(epoch, block, row, offset, end, ended)


@dataclass(frozen=True)
class SavedMixture:
    """What a valid mixture state says (sources by their saved names)."""

    step: int
    windows: int
    step_samples: int
    counts: dict[str, int]
    anchor_step: int
    anchor_windows: int
    targets: dict[str, float]
    schedule: Any
    end: int | None
    primary: str | None
    pass_ended: bool | None
    max_epochs: dict[str, float] | None = None  # None: saved before repetition caps
    cap_from: dict[str, int] | None = None


MIXTURE_KEYS = (
    "version", "kind", "config", "step", "windows", "step_samples", "epoch", "offset", "end", "primary",
    "sources", "anchor", "schedule", "batch_size", "world_size",
)


def read_mixture(state: Any, config: dict[str, Any], *, version: str, fingerprints: Mapping[str, str]) -> SavedMixture:
    """Check a mixture state against ``config`` and the current sources' data; return it.

    Args:
        state: a :class:`~streamtok.mixture.sampler.MixtureSampler` ``state_dict()``.
        config: the current mode, seed and seq_len.
        version: the state version this streamtok writes.
        fingerprints: each current source's data fingerprint (a saved source of the same name
            must hold the same data).

    Raises:
        StateMismatchError: not a mixture state, another configuration or data, or corrupt.
    """
    f = Fields(state)
    if f.raw("version") != version or state.get("kind") != "mixture":
        _fail(
            f"state has version={state['version']!r}, kind={state.get('kind')!r}: not a mixture state of "
            f"version {version!r}; load it into the loader that saved it"
        )
    f.keys(MIXTURE_KEYS, ("rank", "pass_ended", "max_epochs", "cap_from"))
    f.dict("config").same(config)
    step, windows = f.int("step"), f.int("windows")
    if step > windows:
        _fail(f"state has step={step} but windows={windows}: every step takes at least one window")
    step_samples = f.int("step_samples", 1)
    f.int("epoch"), f.int("offset")
    end = f.int("end", none=True)
    primary = f.str("primary", none=True)
    sources, counts = f.dict("sources"), {}
    for name in sources.state:
        if not isinstance(name, str) or not name:
            _fail(f"state['sources'] has a source named {name!r}, not a non-empty str")
        src = sources.dict(name)
        # bos_id and mark: a source of documents="bos"/"pack"; boundary: of every documents mode
        # (streamtok.mixture.units)
        src.keys(("data", "n_tokens", "windows"), ("bos_id", "mark", "boundary"))
        data = src.str("data")
        src.int("n_tokens")
        counts[name] = src.int("windows")
        for key in ("bos_id", "boundary"):
            if key in src.state:
                src.int(key, 0, MAX_TOKEN, none=True)
        if "mark" in src.state:
            mark = src.raw("mark")
            if not (isinstance(mark, list) and len(mark) == 3 and all(_is_int(v) for v in mark)):
                src._wrong("mark", mark, "a list [rows before, epoch, block] of three ints")
            if not (0 <= mark[0] <= counts[name] and 0 <= mark[1] < MAX_EPOCH and mark[2] >= 0):
                _fail(f"state['sources'][{name!r}] key 'mark' is {mark}: out of range")
        if name in fingerprints and data != fingerprints[name]:
            _fail(
                f"source {name!r} holds other data than when the state was saved (fingerprint "
                f"{data} -> {fingerprints[name]}); give it another name to start it afresh"
            )
    if primary is not None and primary not in counts:
        _fail(f"state key 'primary' is {primary!r}, not one of its sources {sorted(counts)}")
    anchor = f.dict("anchor")
    anchor.keys(("step", "windows", "targets"))
    a_step, a_windows = anchor.int("step", 0, step), anchor.int("windows", 0, windows)
    targets_f = anchor.dict("targets")
    targets_f.keys(tuple(counts))
    # No sum bound on counts or targets: a new pass moves each source to its next epoch start,
    # so the counts (positions, not windows read) may exceed the windows taken.
    targets = {name: targets_f.real(name) for name in counts}
    schedule = f.raw("schedule")
    if not isinstance(schedule, list):
        f._wrong("schedule", schedule, "a list of [step, {name: weight}]")
    _placement(f)
    ended = f.bool("pass_ended") if "pass_ended" in state else None
    max_epochs = cap_from = None
    if "max_epochs" in state:  # repetition caps: {name: epochs > 0} of saved sources
        caps = f.dict("max_epochs")
        caps.keys((), tuple(counts))
        max_epochs = {name: caps.real(name, 0.0, math.inf) for name in caps.state}
        zero = sorted(name for name, x in max_epochs.items() if x <= 0)
        if zero:
            _fail(f"state['max_epochs'] caps source(s) {zero} at 0 epochs: a cap is a number of epochs > 0")
    if "cap_from" in state:  # where each source's cap counts from: its count when the pass began
        starts = f.dict("cap_from")
        starts.keys(tuple(counts))
        cap_from = {name: starts.int(name, 0, counts[name]) for name in counts}
    return SavedMixture(
        step, windows, step_samples, counts, a_step, a_windows, targets, schedule, end, primary, ended, max_epochs, cap_from,
    )


def read_node_state(state: Any, key: str, *, version_key: str | None = None, version: int | None = None) -> Any:
    """The inner state under ``key`` of a ``streamtok.nodes`` node's state, checked to be a dict.

    Args:
        state: the node's state, from ``torchdata``'s ``state_dict()``.
        key: where the inner state is (``"position"``, ``"source"``).
        version_key, version: a version key the state must carry, with this value.

    Raises:
        StateMismatchError: not a dict, the version is absent or another, or ``key`` is missing.
    """
    f = Fields(state, "node state")
    if version_key is not None:
        saved = state.get(version_key)
        if not _is_int(saved) or saved != version:
            _fail(
                f"node state has {version_key}={saved!r}, not {version}: not a streamtok WindowNode state; "
                "pass the state torchdata's Loader.state_dict() returned for this pipeline"
            )
        f.keys((version_key, key))
    else:
        f.keys((key,))
    f.dict(key)
    return state[key]
