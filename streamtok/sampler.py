"""WindowSampler: which windows of the token array are read, by whom, and where a pass stands.

The order itself is a pure function of ``(seed, epoch, k)`` (:mod:`streamtok._order`). Global
step ``g`` takes samples ``[o, o + B*W)`` of the epoch (``o`` = samples before it); rank ``r``
takes its contiguous ``B`` of them; DataLoader worker ``w`` of ``K`` builds the steps ``j``
(counted from where the pass began) with ``j % K == w``. The DataLoader hands worker batches
back round-robin, so a rank sees the same stream whatever ``K`` is, and the position
``(epoch, offset)`` counted in samples resumes under any ``K``, ``W`` or ``B``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._chain import Stage, chained
from ._order import WINDOW_MODES, KeyedPermutation, WindowOrder
from ._sampling import CHUNK_STEPS, EpochSampler, PassStart, StepSampler, StepShape, as_int, resolve_rank
from .errors import ConfigError
from .reader import MemmapReader

__all__ = [
    "CHUNK_STEPS", "EpochSampler", "KeyedPermutation", "PassStart", "StepSampler", "StepShape", "WindowSampler",
    "as_int", "resolve_rank",
]


class WindowSampler(Stage, EpochSampler):
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

    MODES = WINDOW_MODES

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
        self.source = source
        self.configure(
            seq_len=seq_len, batch_size=batch_size, mode=mode, seed=seed, epochs=epochs,
            rank=rank, world_size=world_size, group=group,
        )
        n_tok = source.n_tokens
        if self.window_len > n_tok:
            raise ConfigError(
                f"{source.describe()}: seq_len + 1 = {self.window_len} tokens is longer than the "
                f"{n_tok} tokens of the data; use a shorter seq_len or more data"
            )
        self.order = WindowOrder(mode, self.seed, self.seq_len, n_tok)
        self.n_samples = self.order.n_samples
        self.require_step(source.describe())
        self.start_at_zero()

    def __repr__(self) -> str:
        return (
            f"WindowSampler(mode={self.mode!r}, seq_len={self.seq_len}, batch_size={self.batch_size}, "
            f"seed={self.seed}, rank={self.rank}/{self.world_size}, epoch={self.epoch}, offset={self.offset})"
        )

    def rebatch(self, batch_size: int) -> WindowSampler:
        """A copy of this sampler (same class, same position) with another per-rank batch size."""
        other = type(self)(
            self.source, seq_len=self.seq_len, mode=self.mode, seed=self.seed, epochs=self.epochs,
            batch_size=batch_size, rank=self.rank, world_size=self.world_size, **self.own_kwargs(),
        )
        other.epoch, other.offset, other.end_epoch = self.epoch, self.offset, self.end_epoch
        return other

    def own_kwargs(self) -> dict[str, Any]:
        """What a subclass's constructor takes beyond :class:`WindowSampler`'s (for :meth:`rebatch`)."""
        return {}

    # -- the pure order -------------------------------------------------------------------
    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        """Token starts of sample indices ``samples`` (each in ``[0, n_samples)``) of ``epoch``."""
        return self.order.starts(epoch, samples)

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

    def legacy_data(self) -> str:
        return self.source.legacy_fingerprint


@chained(MemmapReader)
def windows(self: MemmapReader, seq_len: int, **kw: Any) -> WindowSampler:
    """A :class:`WindowSampler` of ``seq_len``-token windows over this reader."""
    return WindowSampler(self, seq_len=seq_len, **kw)
