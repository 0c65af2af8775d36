"""WindowSampler: which windows of the token array are read, by whom, and where a pass stands.

The order itself is a pure function of ``(seed, epoch, k)`` (:mod:`streamtok._order`). Global
step ``g`` takes samples ``[o, o + B*W)`` of the epoch (``o`` = samples before it); rank ``r``
takes its contiguous ``B`` of them; DataLoader worker ``w`` of ``K`` builds the steps ``j``
(counted from where the pass began) with ``j % K == w``. The DataLoader hands worker batches
back round-robin, so a rank sees the same stream whatever ``K`` is, and the position
``(epoch, offset)`` counted in samples resumes under any ``K``, ``W`` or ``B``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._chain import Stage, chained
from ._order import WINDOW_MODES, KeyedPermutation, WindowOrder
from ._position import STATE_VERSION, read_position
from .errors import ConfigError
from .reader import MemmapReader

__all__ = ["KeyedPermutation", "PassStart", "StepShape", "WindowSampler", "resolve_rank"]

# Steps whose starts are computed in one vectorised call (amortises numpy's per-call cost).
CHUNK_STEPS = 64


def as_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as a builtin int (numpy integers included), or a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, not {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return int(value)


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
    rank, world_size = as_int("rank", rank), as_int("world_size", world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


class StepShape:
    """What every sampler derives from ``seq_len``, ``batch_size`` and ``world_size``."""

    seq_len: int
    batch_size: int
    world_size: int

    @property
    def window_len(self) -> int:
        """Tokens per window: ``seq_len + 1`` (the inputs and the targets one token later)."""
        return self.seq_len + 1

    @property
    def step_samples(self) -> int:
        """Windows per global step, over all ranks: ``batch_size * world_size``."""
        return self.batch_size * self.world_size


@dataclass(frozen=True)
class PassStart:
    """Where one pass over the data begins and ends: position and last epoch (exclusive)."""

    epoch: int
    offset: int
    end_epoch: int | None


class WindowSampler(Stage, StepShape):
    """Window starts for one rank, step by step, as a pure function of ``(seed, epoch, k)``.

    Chained forms: ``.batch(B)`` (a :class:`~streamtok.Collator`).

    Iterating yields, per step, an int64 array of ``batch_size`` token starts; each window is
    ``seq_len + 1`` tokens (inputs and the shifted targets).

    Args:
        source: the :class:`MemmapReader` to sample from.
        seq_len: tokens per input row ``T``.
        mode: ``"shuffle"``, ``"random"``, ``"sequential"``, or ``"block_shuffle"`` (a shuffle
            local to 4 Mi-token blocks, for object storage where requests cost: see
            :class:`streamtok._order.BlockLocalPermutation`).
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
        if mode not in WINDOW_MODES:
            raise ConfigError(f"mode must be one of {WINDOW_MODES}, not {mode!r}")
        self.source = source
        self.seq_len = as_int("seq_len", seq_len, 1)
        self.mode = mode
        self.seed = as_int("seed", seed)
        self.epochs = None if epochs is None else as_int("epochs", epochs, 1)
        self.batch_size = as_int("batch_size", batch_size, 1)
        self.rank, self.world_size = resolve_rank(rank, world_size, group)
        n_tok = source.n_tokens
        if self.window_len > n_tok:
            raise ConfigError(
                f"{source.describe()}: seq_len + 1 = {self.window_len} tokens is longer than the "
                f"{n_tok} tokens of the data; use a shorter seq_len or more data"
            )
        self.order = WindowOrder(mode, self.seed, self.seq_len, n_tok)
        self.n_samples = self.order.n_samples
        if self.n_samples < self.step_samples:
            raise ConfigError(
                f"{source.describe()}: {self.n_samples} windows of {self.window_len} tokens "
                f"cannot fill one global step of batch_size {self.batch_size} x world_size "
                f"{self.world_size} = {self.step_samples} windows; use a smaller batch or more data"
            )
        self.epoch, self.offset = 0, 0
        self.end_epoch = self.epochs
        self._continue = True  # the next pass continues from the position (fresh or loaded)
        self.pass_ended = False  # the consumer saw the current pass end (StopIteration)

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

    # -- the pure order -------------------------------------------------------------------
    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        """Token starts of sample indices ``samples`` (each in ``[0, n_samples)``) of ``epoch``."""
        return self.order.starts(epoch, samples)

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
        """Where the next pass would start: the position if fresh or loaded, else a new pass.

        As StatefulDataLoader does: a state saved after the last batch of a finite pass, but
        before the consumer saw the pass end, gives an empty pass (a job requeued after its
        final checkpoint trains nothing more); one saved after the pass ended
        (``pass_ended``) starts the next epoch, as iterating again would have.
        """
        if self._continue:
            return PassStart(self.epoch, self.offset, self.end_epoch)
        epoch = self.epoch + (1 if self.offset else 0)
        return PassStart(epoch, 0, None if self.epochs is None else epoch + self.epochs)

    def begin_pass(self) -> PassStart:
        """Start the next pass (see :meth:`next_pass`) and return where it begins."""
        start = self.next_pass()
        self.epoch, self.offset, self.end_epoch = start.epoch, start.offset, start.end_epoch
        self._continue = self.pass_ended = False
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
            while len(offsets) < CHUNK_STEPS and (total is None or j + len(offsets) * num_workers < total):
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
        self.pass_ended = True

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
            "pass_ended": self.pass_ended,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next pass resumes there.

        Every key is checked before anything changes: a state that is not this sampler's
        (other data, seed, ``seq_len`` or mode) or is corrupt (missing keys, wrong types,
        positions out of range) is refused, naming the key.

        Raises:
            StateMismatchError: the state was made for something else, or is corrupt.
        """
        saved = read_position(state, self.config(), self.n_samples, legacy_data=self.source.legacy_fingerprint)
        epoch, offset, end = saved.epoch, saved.offset, saved.end_epoch
        self.epoch, self.offset = epoch, offset
        if offset and self.n_samples - offset < self.step_samples:
            # Saved under a smaller global step: what remains of the epoch is less than one
            # step now; the partial remainder is dropped, as at any epoch end.
            self.epoch, self.offset = epoch + 1, 0
        self.end_epoch = None if self.epochs is None else (end if end is not None else self.epoch + self.epochs)
        self.pass_ended = saved.pass_ended
        self._continue = not saved.pass_ended


@chained(MemmapReader)
def windows(self: MemmapReader, seq_len: int, **kw: Any) -> WindowSampler:
    """A :class:`WindowSampler` of ``seq_len``-token windows over this reader."""
    return WindowSampler(self, seq_len=seq_len, **kw)
