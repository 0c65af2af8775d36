"""The sampler contract: the pass logic and the settings check, written once for every sampler.

A sampler says which rows each global step reads on one rank, as a pure function of its
position, so the loader can hand the steps to any number of workers and save a few integers.
What every consumer (the loader, :mod:`streamtok.nodes`, the prefetcher, the metrics) calls:

- ``next_pass()``: where the next pass would start; changes nothing;
- ``begin_pass()``: start it, and return that start (it is pickled to the workers);
- ``iter_steps(start, worker_id, num_workers)``: the rows of the steps ``j`` of that pass
  with ``j % num_workers == worker_id``;
- ``advance()``: the consumer received one more step;
- ``pass_steps(start)``: steps of a pass (``None``: endless);
- ``pass_ended``: set by the consumer when it saw the pass end;
- ``state_dict()`` / ``load_state_dict(state)``: the position, plain and checked.

A pass is a DataLoader epoch (one ``for batch in loader``). Its end follows
StatefulDataLoader: a state saved after the last batch, before the loop saw the end, resumes
into an empty pass (a job requeued after its final checkpoint trains nothing more); one saved
after the loop ended (``pass_ended``) resumes into the next pass, as iterating again would.

:class:`StepSampler` holds that logic and the check of the settings every sampler shares
(``seq_len``, ``batch_size``, ``mode``, ``seed``, ``epochs``, ``rank``/``world_size``). A
sampler adds its order math and its position type: ``here()`` (the position as a pass
start), ``following()`` (where a new pass starts after the current one), ``enter(start)``,
``advance()``, ``iter_steps()``, ``pass_steps()``, ``position_state()`` and
``load_position()``. :class:`EpochSampler` is that position already made for the common
case: ``n_samples`` samples per epoch, global step ``g`` taking the next ``B*W`` of them,
rank ``r`` its contiguous ``B``; a sampler of that kind writes only ``starts(epoch,
samples)`` and ``config()`` (what a saved position is valid for).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ._position import STATE_VERSION, read_position
from .errors import ConfigError

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


class StepSampler(StepShape):
    """The contract every sampler keeps, with the pass logic and the settings check (see the module).

    A subclass calls :meth:`configure` in its ``__init__`` and implements its order math and
    position type: ``here``, ``following``, ``enter``, ``advance``, ``iter_steps``,
    ``pass_steps``, ``position_state`` and ``load_position``.
    """

    MODES: ClassVar[tuple[str, ...]] = ()  # the orders this sampler knows
    mode: str
    seed: int
    epochs: int | None
    rank: int
    _continue = True  # the next pass continues from the position (fresh or loaded)
    pass_ended = False  # the consumer saw the current pass end (set by whoever consumes it)

    def configure(
        self, *, seq_len: Any, batch_size: Any = 1, mode: str = "shuffle", seed: Any = 0, epochs: Any = 1,
        rank: int | None = None, world_size: int | None = None, group: Any = None,
    ) -> None:
        """Check and keep the settings every sampler has (numpy integers become ints).

        Args:
            seq_len: tokens per row ``T`` (at least 1).
            batch_size: rows per rank and step ``B`` (at least 1).
            mode: one of the class's ``MODES``.
            seed: selects the order.
            epochs: epochs per pass, at least 1, or ``None`` (a stream).
            rank, world_size, group: the data-parallel place (:func:`resolve_rank`).

        Raises:
            ConfigError: a setting of the wrong type or out of range, named.
        """
        if mode not in self.MODES:
            raise ConfigError(f"mode must be one of {self.MODES}, not {mode!r}")
        self.seq_len = as_int("seq_len", seq_len, 1)
        self.batch_size = as_int("batch_size", batch_size, 1)
        self.mode = mode
        self.seed = as_int("seed", seed)
        self.epochs = None if epochs is None else as_int("epochs", epochs, 1)
        self.rank, self.world_size = resolve_rank(rank, world_size, group)
        self._continue, self.pass_ended = True, False

    # -- what a sampler implements: its position type and order ------------------------------
    def here(self) -> Any:
        """The current position, as the start of a pass (with where that pass ends)."""
        raise NotImplementedError

    def following(self) -> Any:
        """Where a new pass starts after the current one was left or ended."""
        raise NotImplementedError

    def enter(self, start: Any) -> None:
        """Move the position to ``start`` (a pass begins there)."""
        raise NotImplementedError

    def advance(self) -> None:
        """Record that the consumer received one more step."""
        raise NotImplementedError

    def iter_steps(self, start: Any, worker_id: int = 0, num_workers: int = 1) -> Iterator[np.ndarray]:
        """What the steps ``j`` of the pass from ``start`` read, for ``j % num_workers == worker_id``."""
        raise NotImplementedError

    def pass_steps(self, start: Any) -> int | None:
        """Global steps from ``start`` to the end of its pass (``None``: endless)."""
        raise NotImplementedError

    def position_state(self) -> dict[str, Any]:
        """The position's part of :meth:`state_dict` (plain ints and strings, with its version and configuration)."""
        raise NotImplementedError

    def load_position(self, state: dict[str, Any]) -> bool | None:
        """Check a whole saved state, then take its position; return its ``pass_ended`` (``None``: not saved)."""
        raise NotImplementedError

    # -- the pass logic, once -------------------------------------------------------------------
    def next_pass(self) -> Any:
        """Where the next pass would start: the position if fresh or loaded, else a new pass.

        As StatefulDataLoader does: a state saved after the last batch of a finite pass, but
        before the consumer saw the pass end, gives an empty pass; one saved after the pass
        ended (``pass_ended``) starts the next pass, as iterating again would have.
        """
        return self.here() if self._continue else self.following()

    def begin_pass(self) -> Any:
        """Start the next pass (see :meth:`next_pass`) and return where it begins."""
        start = self.next_pass()
        self.enter(start)
        self._continue = self.pass_ended = False
        return start

    def __iter__(self) -> Iterator[np.ndarray]:
        """One pass; in a DataLoader worker, that worker's share of it (the loader counts)."""
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        start = self.begin_pass()
        if info is not None:
            yield from self.iter_steps(start, info.id, info.num_workers)
            return
        for step in self.iter_steps(start):
            self.advance()
            yield step
        self.pass_ended = True

    def __len__(self) -> int:
        steps = self.pass_steps(self.next_pass())
        if steps is None:
            raise TypeError("an endless sampler (epochs=None) has no length")
        return steps

    def end_after(self, epoch: int, saved_end: int | None) -> int | None:
        """The end epoch of a pass resumed at ``epoch``: the saved one, else ``epochs`` on (``None``: a stream)."""
        if self.epochs is None:
            return None
        return saved_end if saved_end is not None else epoch + self.epochs

    def new_pass_epochs(self, epoch: int, at_epoch_start: bool) -> tuple[int, int | None]:
        """``(first epoch, end epoch)`` of a new pass from a position in ``epoch``: the next epoch's start
        (this one's, if the position is at it), and ``epochs`` on."""
        first = epoch if at_epoch_start else epoch + 1
        return first, None if self.epochs is None else first + self.epochs

    def state_dict(self) -> dict[str, Any]:
        """The position as plain ints and strings (JSON-serialisable), with its configuration and placement."""
        return {
            **self.position_state(),
            "batch_size": self.batch_size, "world_size": self.world_size, "rank": self.rank,
            "pass_ended": self.pass_ended,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next pass resumes there (see :meth:`next_pass`).

        The whole state is checked before anything changes (:meth:`load_position`).

        Raises:
            StateMismatchError: the state was made for something else, or is corrupt (named key).
        """
        ended = bool(self.load_position(state))  # None: a state saved before passes were exact
        self.pass_ended = ended
        self._continue = not ended


class EpochSampler(StepSampler):
    """A sampler whose position is ``(epoch, offset)``: ``n_samples`` samples per epoch, in order.

    Global step ``g`` takes samples ``[o, o + B*W)`` of the epoch (``o``: samples before it),
    rank ``r`` its contiguous ``B``; the epoch's partial last step is dropped. A subclass
    sets ``source`` (its reader) and ``n_samples`` and writes the order: ``starts(epoch,
    samples)`` (token starts of sample indices) and ``config()``.
    """

    source: Any
    n_samples: int

    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        """Token starts of sample indices ``samples`` (each in ``[0, n_samples)``) of ``epoch``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """What a saved position is valid for (compared key by key on load)."""
        raise NotImplementedError

    def legacy_data(self) -> str | None:
        """The data fingerprint as version-1 states computed it (``None``: no such states)."""
        return None

    def boundary_now(self) -> tuple[int | None, str] | None:
        """The boundary token rows are split at and where it came from; ``None``: no documents
        (a saved token is then ignored, see :func:`streamtok._position.boundary_config`)."""
        return None

    def start_at_zero(self) -> None:
        """Put the position at the first epoch's start (call once ``n_samples`` is known)."""
        self.epoch, self.offset, self.end_epoch = 0, 0, self.epochs

    def require_step(self, what: str, unit: str = "windows", hint: str = "use a smaller batch or more data") -> None:
        """Refuse an epoch too short for one global step.

        Args:
            what: the data, as the message names it.
            unit: what a sample is (``"windows"``, ``"document starts"``).
            hint: what to do.
        """
        if self.n_samples < self.step_samples:
            raise ConfigError(
                f"{what}: {self.n_samples} {unit} of {self.window_len} tokens cannot fill one global step "
                f"of batch_size {self.batch_size} x world_size {self.world_size} = {self.step_samples} rows; {hint}"
            )

    @property
    def steps_per_epoch(self) -> int:
        """Full global steps in one epoch from its start (the partial last step is dropped)."""
        return self.n_samples // self.step_samples

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
        if start.end_epoch is None:
            return None
        if start.epoch >= start.end_epoch:
            return 0
        first = (self.n_samples - start.offset) // self.step_samples
        return first + (start.end_epoch - start.epoch - 1) * self.steps_per_epoch

    def here(self) -> PassStart:
        return PassStart(self.epoch, self.offset, self.end_epoch)

    def following(self) -> PassStart:
        epoch, end = self.new_pass_epochs(self.epoch, self.offset == 0)
        return PassStart(epoch, 0, end)

    def enter(self, start: PassStart) -> None:
        self.epoch, self.offset, self.end_epoch = start.epoch, start.offset, start.end_epoch

    def advance(self) -> None:
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

    # -- state ----------------------------------------------------------------------------
    def position_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "config": self.config(), "epoch": self.epoch, "offset": self.offset,
            "end_epoch": self.end_epoch,
        }

    def load_position(self, state: dict[str, Any]) -> bool:
        saved = read_position(
            state, self.config(), self.n_samples, legacy_data=self.legacy_data(), boundary=self.boundary_now(),
        )
        self.epoch, self.offset = saved.epoch, saved.offset
        if saved.offset and self.n_samples - saved.offset < self.step_samples:
            # Saved under a smaller global step: what remains of the epoch is less than one
            # step now; the partial remainder is dropped, as at any epoch end.
            self.epoch, self.offset = saved.epoch + 1, 0
        self.end_epoch = self.end_after(self.epoch, saved.end_epoch)
        return saved.pass_ended
