"""The stages as ``torchdata.nodes``: put streamtok's order and gather inside a nodes pipeline.

::

    from torchdata import nodes
    from .nodes import BatchNode, WindowNode

    node = nodes.Prefetcher(BatchNode(WindowNode(reader, seq_len=1024, seed=0), 32), 2)
    loader = nodes.Loader(node)            # state_dict() / load_state_dict() as torchdata's

- :class:`WindowNode` yields window starts (one int per ``next()``) in the sampler's order;
  its state is the sampler's JSON position, a few integers.
- :class:`BatchNode` gathers ``batch_size`` of them into ``(x, y)`` (or the compact
  ``(B, T+1)`` buffer); it holds no state of its own, so its state is its source's.
- :class:`SplitNode` moves compact buffers to a device and splits them there (what
  :class:`~streamtok.CUDAPrefetcher` does per batch, without its thread: compose it with
  ``nodes.Prefetcher`` / ``nodes.PinMemory``).

``ShardLister`` and ``MemmapReader`` are static descriptions and need no node. Following
torchdata's samplers, ``reset(None)`` after a pass starts the next epoch (a new order); a
loaded state resumes its own. Rank ``r`` of ``W`` takes every ``W``-th window, so a global
batch is the same windows for any ``W``. Nodes run in the training process (threads); the
:class:`~streamtok.StreamtokLoader` path runs worker processes (README, "torchdata nodes").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchdata.nodes import BaseNode

from ._position import read_node_state
from .collate import Collator, split
from .errors import ConfigError
from .reader import MemmapReader
from .sampler import PassStart, WindowSampler

NODE_STATE_VERSION = 1
_CHUNK = 256  # window starts computed per vectorised call


class WindowNode(BaseNode[int]):
    """Window starts in the order of a :class:`WindowSampler`, one per ``next()``.

    Args:
        source: a :class:`MemmapReader` (then ``seq_len`` and the order settings apply) or a
            :class:`WindowSampler` (its settings are used; one window per rank and step).
        seq_len: tokens per input row ``T`` (a window is ``T + 1`` tokens).
        mode, seed, epochs, rank, world_size: as for :class:`WindowSampler`.
    """

    POSITION_KEY = "position"

    def __init__(
        self,
        source: MemmapReader | WindowSampler,
        seq_len: int | None = None,
        *,
        mode: str = "shuffle",
        seed: int = 0,
        epochs: int | None = 1,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        if isinstance(source, WindowSampler):
            if seq_len is not None and seq_len != source.seq_len:
                raise ConfigError(f"seq_len={seq_len} disagrees with the sampler's seq_len={source.seq_len}")
            self.sampler = source.rebatch(1)
        elif isinstance(source, MemmapReader):
            if seq_len is None:
                raise ConfigError("WindowNode over a MemmapReader needs seq_len (tokens per row)")
            self.sampler = WindowSampler(
                source, seq_len, mode=mode, seed=seed, epochs=epochs, batch_size=1, rank=rank, world_size=world_size
            )
        else:
            raise ConfigError(f"WindowNode reads a MemmapReader or a WindowSampler, not {type(source).__name__}")
        self._start: Any = None
        self._computed = 0
        self._taken = 0
        self._buffer = []
        self._at = 0

    @property
    def reader(self) -> MemmapReader:
        return self.sampler.source

    @property
    def seq_len(self) -> int:
        return self.sampler.seq_len

    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        if initial_state is not None:  # checked whole before anything changes
            position = read_node_state(initial_state, self.POSITION_KEY, version_key="streamtok_node", version=NODE_STATE_VERSION)
        super().reset(initial_state)
        self._sync()  # where the last pass stopped decides where the next one starts
        if initial_state is not None:
            self.sampler.load_state_dict(position)  # checks the position before changing it
        if initial_state is not None and self.sampler.pass_ended:
            # Saved after its pass ended: as every torchdata node, resume into an empty pass;
            # torchdata's Loader (restart_on_stop_iteration) then resets to the next epoch.
            epoch, offset = self.sampler.epoch, self.sampler.offset
            self._start = PassStart(epoch, offset, epoch)
        else:
            self._start = self.sampler.begin_pass()
        self._computed = 0  # windows (steps) of this pass computed so far
        self._taken = 0  # windows handed out in this pass (one per step: one window per rank)
        self._buffer: list[int] = []
        self._at = 0

    def _refill(self) -> bool:
        """Compute the next chunk of starts at once: one vectorised call for up to ``_CHUNK`` windows."""
        sampler, j = self.sampler, self._computed
        total = sampler.pass_steps(self._start)
        n = _CHUNK if total is None else min(_CHUNK, total - j)
        if n <= 0:
            self._buffer, self._at = [], 0
            return False
        epoch, offset = sampler.position_after(self._start, j)
        n = min(n, (sampler.n_samples - offset) // sampler.step_samples)  # stay inside the epoch
        samples = offset + sampler.rank + np.arange(n, dtype=np.int64) * sampler.step_samples
        self._buffer, self._at = sampler.starts(epoch, samples).tolist(), 0
        self._computed = j + n
        return True

    def next(self) -> int:
        if self._at == len(self._buffer) and not self._refill():
            self.sampler.pass_ended = True
            raise StopIteration
        self._at += 1
        self._taken += 1
        return self._buffer[self._at - 1]

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` starts at once (what :class:`BatchNode` asks); ``StopIteration`` if fewer remain."""
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            if self._at == len(self._buffer) and not self._refill():
                self.sampler.pass_ended = True
                raise StopIteration
            k = min(n - filled, len(self._buffer) - self._at)
            out[filled : filled + k] = self._buffer[self._at : self._at + k]
            self._at += k
            filled += k
        self._taken += n
        return out

    def _sync(self) -> None:
        """Bring the sampler's position up to the windows handed out, in O(1)."""
        if self._start is None:
            return
        self.sampler.epoch, self.sampler.offset = self.sampler.position_after(self._start, self._taken)

    def get_state(self) -> dict[str, Any]:
        self._sync()
        return {"streamtok_node": NODE_STATE_VERSION, self.POSITION_KEY: self.sampler.state_dict()}


class BatchNode(BaseNode[Any]):
    """``batch_size`` windows from a :class:`WindowNode` as ``(x, y)``, or the compact buffer.

    A pass that ends inside a batch drops the partial batch (as the loader drops a partial
    global step), so the state is always the source's position after a whole batch.

    Args:
        source: a :class:`WindowNode`, or any node of window starts (then give ``reader``
            and ``seq_len``).
        batch_size: rows per batch ``B``.
        dtype: dtype of ``x`` and ``y``.
        compact: yield the ``(B, T+1)`` buffer in the transport dtype (uint16 for GPT-2),
            to split later (:class:`SplitNode`), instead of ``(x, y)``.
        vocab_size: check every batch against it (see :class:`~streamtok.Collator`).
        reader, seq_len: where the windows are, when ``source`` does not say.
    """

    SOURCE_KEY = "source"

    def __init__(
        self,
        source: BaseNode[int],
        batch_size: int,
        *,
        dtype: torch.dtype = torch.int64,
        compact: bool = False,
        vocab_size: int | None = None,
        reader: MemmapReader | None = None,
        seq_len: int | None = None,
    ):
        super().__init__()
        if int(batch_size) != batch_size or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
        reader = reader if reader is not None else getattr(source, "reader", None)
        seq_len = seq_len if seq_len is not None else getattr(source, "seq_len", None)
        if reader is None or seq_len is None:
            raise ConfigError("BatchNode needs reader= and seq_len= when its source is not a WindowNode")
        self.source = source
        self.batch_size = int(batch_size)
        self.compact = compact
        self.collator = Collator(reader, seq_len=seq_len, dtype=dtype, vocab_size=vocab_size)

    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        inner = None if initial_state is None else read_node_state(initial_state, self.SOURCE_KEY)
        super().reset(initial_state)
        self.source.reset(inner)

    def next(self) -> Any:
        take = getattr(self.source, "take", None)
        if take is not None:  # a WindowNode: the whole batch's starts in one call
            starts = take(self.batch_size)
        else:
            starts = np.empty(self.batch_size, dtype=np.int64)
            for i in range(self.batch_size):
                starts[i] = next(self.source)  # StopIteration inside a batch drops it
        if self.compact:
            return self.collator.gather(starts)
        return self.collator(starts)

    def get_state(self) -> dict[str, Any]:
        return {self.SOURCE_KEY: self.source.state_dict()}


class SplitNode(BaseNode[tuple[torch.Tensor, torch.Tensor]]):
    """Compact ``(B, T+1)`` buffers to ``(x, y)`` on ``device`` (2-byte tokens cross the bus, not 8).

    Args:
        source: a node of compact buffers (``BatchNode(..., compact=True)``, maybe behind
            ``nodes.PinMemory``).
        device: where ``x`` and ``y`` go; default the buffer's own device.
        dtype: dtype of ``x`` and ``y``.
    """

    SOURCE_KEY = "source"

    def __init__(self, source: BaseNode[torch.Tensor], device: str | torch.device | None = None, *, dtype: torch.dtype = torch.int64):
        super().__init__()
        self.source = source
        self.device = None if device is None else torch.device(device)
        self.dtype = dtype

    def reset(self, initial_state: dict[str, Any] | None = None) -> None:
        inner = None if initial_state is None else read_node_state(initial_state, self.SOURCE_KEY)
        super().reset(initial_state)
        self.source.reset(inner)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        buf = next(self.source)
        if self.device is not None and buf.device != self.device:
            buf = buf.to(self.device, non_blocking=buf.is_pinned())
        return split(buf, self.dtype)

    def get_state(self) -> dict[str, Any]:
        return {self.SOURCE_KEY: self.source.state_dict()}
