"""WindowSampler: which windows of the token array are read, in what order, by whom.

The order is a pure function. Sample ``k`` of epoch ``e`` has a start computed from
``(seed, e, k)`` alone, in O(1) time and memory:

- ``shuffle``: the data is cut into ``N // (T+1)`` non-overlapping windows of ``T+1`` tokens;
  epoch ``e`` visits them in the order of a keyed bijection on ``[0, n)`` (a 4-round Feistel
  network on the next even power of two, cycle-walking back into range: at most 4 expected
  walks, no permutation table — 100M windows would otherwise cost 800 MB per worker).
- ``random``: with replacement; start ``k`` is a counter-based hash of ``(seed, e, k)``, so
  any position can be jumped to. An epoch has as many samples as ``shuffle`` has windows.
- ``sequential``: window ``k`` starts at ``k*T``; every token is a target exactly once.

Global step ``g`` takes samples ``[o, o + B*W)`` of the epoch (``o`` = samples before it);
rank ``r`` takes its contiguous ``B`` of them; DataLoader worker ``w`` of ``K`` builds the
steps ``j`` (counted from where the pass began) with ``j % K == w``. The DataLoader hands
worker batches back round-robin, so a rank sees the same stream whatever ``K`` is, and the
position ``(epoch, offset)`` counted in samples resumes under any ``K``, ``W`` or ``B``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, StateMismatchError
from .reader import MemmapReader

if TYPE_CHECKING:
    from .collate import Collator

MODES = ("shuffle", "random", "sequential")
STATE_VERSION = 1
_MASK64 = (1 << 64) - 1
# Steps whose starts are computed in one vectorised call (amortises numpy's per-call cost).
_CHUNK_STEPS = 64


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array: a fast, well-mixed keyed hash."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _key(*parts: int) -> int:
    """A 64-bit key from small integers (seed, epoch, round)."""
    z = np.zeros(1, dtype=np.uint64)
    for p in parts:
        z = _mix64(z ^ np.uint64(p & _MASK64))
    return int(z[0])


class KeyedPermutation:
    """A bijection on ``[0, n)`` chosen by ``key``, evaluated pointwise in O(1) memory.

    Args:
        n: size of the domain.
        key: any integer; different keys give unrelated orders.
    """

    ROUNDS = 4

    def __init__(self, n: int, key: int):
        if n < 1:
            raise ConfigError(f"a permutation needs a non-empty domain, got n={n}")
        self.n = n
        bits = max(2, int(n - 1).bit_length())
        self._half = np.uint64((bits + 1) // 2)
        self._mask = np.uint64((1 << int(self._half)) - 1)
        self._keys = [np.uint64(_key(key, r)) for r in range(self.ROUNDS)]

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._mask
        for k in self._keys:
            left, right = right, left ^ (_mix64(right ^ k) & self._mask)
        return (left << self._half) | right

    def __call__(self, k: np.ndarray | int) -> np.ndarray:
        shape = np.shape(k)
        x = np.array(k, dtype=np.uint64, ndmin=1)
        if self.n == 1:
            return np.zeros(shape, dtype=np.int64)
        x = self._feistel(x)
        out_of_range = x >= np.uint64(self.n)
        while out_of_range.any():  # cycle-walk: stays a bijection on [0, n)
            x[out_of_range] = self._feistel(x[out_of_range])
            out_of_range = x >= np.uint64(self.n)
        return x.astype(np.int64).reshape(shape)


def resolve_rank(rank: int | None, world_size: int | None, group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)``: given, else from ``group``, ``torch.distributed``, the env, or (0, 1).

    Args:
        rank, world_size: the data-parallel place, when known.
        group: a ``torch.distributed`` process group (e.g. the data-parallel group under
            tensor or pipeline parallelism): this process's rank in it, and its size.

    Raises:
        ConfigError: both ``group`` and ``rank``/``world_size``, this process not in ``group``,
            or a rank outside ``[0, world_size)``.
    """
    if group is not None:
        import torch.distributed as dist

        if rank is not None or world_size is not None:
            raise ConfigError("pass either group= or rank=/world_size=, not both: the group defines them")
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("group= needs torch.distributed to be initialised (init_process_group) first")
        rank, world_size = dist.get_rank(group), dist.get_world_size(group)
        if rank < 0:
            raise ConfigError(f"this process (global rank {dist.get_rank()}) is not a member of the process group given as group=")
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            auto = (dist.get_rank(), dist.get_world_size())
        else:
            auto = (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))
        rank = auto[0] if rank is None else rank
        world_size = auto[1] if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


@dataclass(frozen=True)
class PassStart:
    """Where one pass over the data begins and ends: position and last epoch (exclusive)."""

    epoch: int
    offset: int
    end_epoch: int | None


class WindowSampler:
    """Window starts for one rank, step by step, as a pure function of ``(seed, epoch, k)``.

    Iterating yields, per step, an int64 array of ``batch_size`` token starts; each window is
    ``seq_len + 1`` tokens (inputs and the shifted targets).

    Args:
        source: the :class:`MemmapReader` to sample from.
        seq_len: tokens per input row ``T``.
        mode: ``"shuffle"``, ``"random"`` or ``"sequential"``.
        seed: selects the order; same seed, same order.
        epochs: epochs per pass over the sampler; ``None`` streams forever.
        batch_size: windows per rank and step ``B``.
        rank, world_size: this rank's data-parallel place; ``None`` reads ``torch.distributed``
            or the env (the global rank: with tensor or pipeline parallelism, pass the
            data-parallel ones, or ``group``).
        group: a ``torch.distributed`` process group to take ``rank``/``world_size`` from
            (the data-parallel group), instead of giving them.

    Raises:
        ConfigError: bad settings, or data too short for one window or one global step.
    """

    def __init__(
        self,
        source: MemmapReader,
        seq_len: int,
        *,
        mode: str = "shuffle",
        seed: int = 0,
        epochs: int | None = 1,
        batch_size: int = 1,
        rank: int | None = None,
        world_size: int | None = None,
        group: Any = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {mode!r}")
        if int(seq_len) != seq_len or seq_len < 1:
            raise ConfigError(f"seq_len must be a positive integer, not {seq_len!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
        if epochs is not None and epochs < 1:
            raise ConfigError(f"epochs must be a positive integer or None, not {epochs!r}")
        self.source = source
        self.seq_len = int(seq_len)
        self.mode = mode
        self.seed = int(seed)
        self.epochs = epochs
        self.batch_size = int(batch_size)
        self.rank, self.world_size = resolve_rank(rank, world_size, group)
        n_tok = source.n_tokens
        if self.window_len > n_tok:
            raise ConfigError(
                f"{source.describe()}: seq_len + 1 = {self.window_len} tokens is longer than the "
                f"{n_tok} tokens of the data; use a shorter seq_len or more data"
            )
        self.n_samples = (n_tok - 1) // self.seq_len if mode == "sequential" else n_tok // self.window_len
        if self.n_samples < self.step_samples:
            raise ConfigError(
                f"{source.describe()}: {self.n_samples} windows of {self.window_len} tokens "
                f"cannot fill one global step of batch_size {self.batch_size} x world_size "
                f"{self.world_size} = {self.step_samples} windows; use a smaller batch or more data"
            )
        self.epoch, self.offset = 0, 0
        self.end_epoch = epochs
        self._continue = True  # the next pass continues from the position (fresh or loaded)
        self._perm: tuple[int, KeyedPermutation] | None = None

    @property
    def window_len(self) -> int:
        return self.seq_len + 1

    @property
    def step_samples(self) -> int:
        """Samples per global step, over all ranks: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Full global steps in one epoch from its start (the partial last step is dropped)."""
        return self.n_samples // self.step_samples

    def __repr__(self) -> str:
        return (
            f"WindowSampler(mode={self.mode!r}, seq_len={self.seq_len}, batch_size={self.batch_size}, "
            f"seed={self.seed}, rank={self.rank}/{self.world_size}, epoch={self.epoch}, offset={self.offset})"
        )

    def rebatch(self, batch_size: int) -> WindowSampler:
        """A copy of this sampler (same position) with another per-rank batch size."""
        other = WindowSampler(
            self.source, seq_len=self.seq_len, mode=self.mode, seed=self.seed, epochs=self.epochs,
            batch_size=batch_size, rank=self.rank, world_size=self.world_size,
        )
        other.epoch, other.offset, other.end_epoch = self.epoch, self.offset, self.end_epoch
        return other

    def batch(self, batch_size: int, **kw: Any) -> Collator:
        """A :class:`Collator` making ``(x, y)`` batches of ``batch_size`` windows."""
        from .collate import Collator

        return Collator(self.rebatch(batch_size), **kw)

    # -- the pure order -------------------------------------------------------------------
    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        """Token starts of sample indices ``samples`` (each in ``[0, n_samples)``) of ``epoch``."""
        k = np.asarray(samples, dtype=np.int64)
        if self.mode == "sequential":
            return k * self.seq_len
        if self.mode == "shuffle":
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, KeyedPermutation(self.n_samples, _key(self.seed, epoch)))
            return self._perm[1](k) * self.window_len
        h = _mix64(_mix64(k.astype(np.uint64) ^ np.uint64(_key(self.seed, epoch, 0x5EED))))
        return (h % np.uint64(self.source.n_tokens - self.window_len + 1)).astype(np.int64)

    def rank_samples(self, offsets: np.ndarray) -> np.ndarray:
        """Sample indices of this rank for global steps that begin at ``offsets``: shape (steps, B)."""
        base = np.asarray(offsets, dtype=np.int64)[:, None] + self.rank * self.batch_size
        return base + np.arange(self.batch_size, dtype=np.int64)

    # -- positions ------------------------------------------------------------------------
    def next_position(self, epoch: int, offset: int) -> tuple[int, int]:
        """The position after one global step from ``(epoch, offset)``."""
        offset += self.step_samples
        if self.n_samples - offset < self.step_samples:
            return epoch + 1, 0
        return epoch, offset

    def position_after(self, start: PassStart, j: int) -> tuple[int, int]:
        """The position ``j`` steps after ``start``, in O(1)."""
        first = (self.n_samples - start.offset) // self.step_samples
        if j < first:
            return start.epoch, start.offset + j * self.step_samples
        j -= first
        spe = self.steps_per_epoch
        return start.epoch + 1 + j // spe, (j % spe) * self.step_samples

    def pass_steps(self, start: PassStart) -> int | None:
        """Global steps from ``start`` to the end of its pass (``None``: endless)."""
        if start.end_epoch is None:
            return None
        if start.epoch >= start.end_epoch:
            return 0
        first = (self.n_samples - start.offset) // self.step_samples
        return first + (start.end_epoch - start.epoch - 1) * self.steps_per_epoch

    def next_pass(self) -> PassStart:
        """Where the next pass would start: the position if fresh or loaded, else a new pass."""
        finished = self.end_epoch is not None and self.epoch >= self.end_epoch
        if self._continue and not finished:
            return PassStart(self.epoch, self.offset, self.end_epoch)
        epoch = self.epoch + (1 if self.offset else 0)
        return PassStart(epoch, 0, None if self.epochs is None else epoch + self.epochs)

    def begin_pass(self) -> PassStart:
        """Start the next pass (see :meth:`next_pass`) and return where it begins."""
        start = self.next_pass()
        self.epoch, self.offset, self.end_epoch = start.epoch, start.offset, start.end_epoch
        self._continue = False
        return start

    def advance(self) -> None:
        """Record that the consumer received one more step."""
        self.epoch, self.offset = self.next_position(self.epoch, self.offset)

    def iter_steps(self, start: PassStart, worker_id: int = 0, num_workers: int = 1) -> Iterator[np.ndarray]:
        """Start arrays of the steps ``j`` of a pass with ``j % num_workers == worker_id``."""
        total = self.pass_steps(start)
        j = worker_id
        while total is None or j < total:
            epoch, offset = self.position_after(start, j)
            offsets = [offset]
            # Gather a chunk of this worker's steps of the same epoch for one vectorised call.
            while len(offsets) < _CHUNK_STEPS and (total is None or j + len(offsets) * num_workers < total):
                e2, o2 = self.position_after(start, j + len(offsets) * num_workers)
                if e2 != epoch:
                    break
                offsets.append(o2)
            rows = self.starts(epoch, self.rank_samples(np.array(offsets)))
            yield from rows
            j += len(offsets) * num_workers

    def __iter__(self) -> Iterator[np.ndarray]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        start = self.begin_pass()
        if info is not None:
            yield from self.iter_steps(start, info.id, info.num_workers)
            return
        for starts in self.iter_steps(start):
            self.advance()
            yield starts

    def __len__(self) -> int:
        steps = self.pass_steps(self.next_pass())
        if steps is None:
            raise TypeError("an endless sampler (epochs=None) has no length")
        return steps

    # -- state ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What a saved position is valid for: the order's inputs and the data's identity."""
        return {
            "mode": self.mode,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "data": self.source.fingerprint,
            "n_tokens": self.source.n_tokens,
        }

    def state_dict(self) -> dict[str, Any]:
        """The position as plain ints and strings (JSON-serialisable), with its configuration."""
        return {
            "version": STATE_VERSION,
            "config": self.config(),
            "epoch": self.epoch,
            "offset": self.offset,
            "end_epoch": self.end_epoch,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "rank": self.rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next pass resumes there.

        Raises:
            StateMismatchError: the state was made for other data, seed, seq_len or mode.
        """
        if state["version"] != STATE_VERSION:
            raise StateMismatchError(f"state version {state['version']} is not {STATE_VERSION}")
        saved, current = state["config"], self.config()
        for key in current:
            if saved[key] != current[key]:
                raise StateMismatchError(
                    f"state_dict was saved with {key}={saved[key]!r} but this loader has "
                    f"{key}={current[key]!r}; resuming would read other windows. "
                    "Load it into a loader built with the same settings and data."
                )
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if not 0 <= offset <= self.n_samples or epoch < 0:
            raise StateMismatchError(f"state position epoch={epoch}, offset={offset} is out of range")
        self.epoch, self.offset = epoch, offset
        if offset and self.n_samples - offset < self.step_samples:
            # Saved under a smaller global step: what remains of the epoch is less than one
            # step now; the partial remainder is dropped, as at any epoch end.
            self.epoch, self.offset = epoch + 1, 0
        end = state["end_epoch"]
        self.end_epoch = None if self.epochs is None else (int(end) if end is not None else self.epoch + self.epochs)
        self._continue = True
