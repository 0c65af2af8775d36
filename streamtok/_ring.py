"""Batch slots in shared memory, made once per pass: workers send an index, not a tensor.

Sending a tensor from a DataLoader worker costs a shared-memory handshake per batch: with
torch's default ``file_descriptor`` strategy the trainer connects to the worker's
resource-sharer thread to receive a duplicated descriptor, then maps it (measured on a
2-core machine: ~0.8 ms of the trainer's thread per batch, more than building the batch).

Here the trainer allocates ``slots`` buffers per worker in shared memory before the workers
start (they inherit them on fork, or receive them once when spawned). Worker ``w`` writes
its ``n``-th batch into slot ``n % slots`` and sends the pair ``(w, n)``, a few bytes; the
trainer copies the slot out (64 KiB for 32x1024 uint16 tokens: ~5 µs; into pinned memory
when asked), and only then marks it released in a shared counter: nothing handed out keeps a
view of a slot. A worker waits before overwriting a slot the trainer has not
released; with ``slots`` above the DataLoader's ``prefetch_factor`` it waits at most briefly
at the end of a pass, since the DataLoader asks worker ``w`` for batch
``n + prefetch_factor`` only once it has received batch ``n``. A worker whose trainer died
stops waiting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from .collate import host_empty, new_buffer


class SlotRef(NamedTuple):
    """What a worker sends for one batch: who wrote it, in which pass, and its number there."""

    worker: int
    n: int
    pass_id: int = 0


_COUNT_BITS = 32  # a released word holds (pass_id << 32) | batches released in that pass
_COUNT_MASK = (1 << _COUNT_BITS) - 1


class SlotRing:
    """``slots`` shared ``shape`` buffers per worker, and a released-count per worker.

    Args:
        workers: DataLoader workers.
        slots: buffers per worker (more than the DataLoader's ``prefetch_factor``).
        shape: ``(B, T+1)`` of one batch.
        dtype: the transport dtype.
    """

    def __init__(self, workers: int, slots: int, shape: tuple[int, int], dtype: np.dtype):
        self.slots = slots
        rows = workers * slots * shape[0]
        self.data = new_buffer((rows, shape[1]), np.dtype(dtype), shared=True).view(workers, slots, *shape)
        self.released = new_buffer((1, workers), np.dtype(np.int64), shared=True)[0]
        self.released.zero_()
        self.owner = os.getpid()  # the trainer: workers stop waiting if it is gone
        self._views()

    def _views(self) -> None:
        # Indexing a torch tensor costs ~1.6 µs, a list or a numpy array ~0.1 µs.
        self._slot = [[self.data[w, i] for i in range(self.slots)] for w in range(self.data.shape[0])]
        self._released = self.released.numpy()
        start = self.data.data_ptr()  # every slot lies in this one block of shared memory
        self._span = (start, start + self.data.numel() * self.data.element_size())

    def __getstate__(self) -> dict[str, Any]:  # spawned workers: share the tensors, rebuild the views
        return {"slots": self.slots, "data": self.data, "released": self.released, "owner": self.owner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._views()

    def acquire(self, worker: int, n: int, pass_id: int = 0) -> torch.Tensor:
        """Worker side: the slot for batch ``n`` of a pass, once the trainer has copied batch ``n - slots``.

        Persistent workers keep one ring across passes; the released count is tagged with
        its pass, so a count left by an earlier pass is read as zero, never as permission.
        """
        need, polls = n - self.slots + 1, 0
        while need > 0 and self._released_in(worker, pass_id) < need:
            polls += 1
            if polls % 10_000 == 0 and os.getppid() != self.owner:
                raise RuntimeError(f"DataLoader worker {worker}: the training process {self.owner} is gone")
            time.sleep(0.0001)
        return self._slot[worker][n % self.slots]

    def _released_in(self, worker: int, pass_id: int) -> int:
        word = int(self._released[worker])
        return word & _COUNT_MASK if word >> _COUNT_BITS == pass_id else 0

    def take(self, ref: SlotRef, finish: Callable[[torch.Tensor], Any] | None = None, *, pin: bool = False) -> Any:
        """Trainer side: batch ``ref`` in memory of its own, then the slot is released.

        Args:
            ref: the batch a worker sent.
            finish: makes the batch from the slot (default: a copy of it), pinning what it
                makes itself if asked to. A tensor it returns that still lies in the ring is
                copied before the release: once released, a worker refills the slot.
            pin: the default copy, and any such copy, go to page-locked memory.
        """
        slot = self._slot[ref.worker][ref.n % self.slots]
        if finish is None:
            out: Any = host_empty(tuple(slot.shape), slot.dtype, pin)
            np.copyto(out.numpy(), slot.numpy())  # numpy: 2x clone's speed
        else:
            out = self._private(finish(slot), pin)
        self._released[ref.worker] = (ref.pass_id << _COUNT_BITS) | (ref.n + 1)
        return out

    def _private(self, out: Any, pin: bool) -> Any:
        """``out`` with every tensor that lies in the ring (a view of a slot) replaced by a copy."""
        if isinstance(out, torch.Tensor):
            if out.device.type == "cpu" and self._span[0] <= out.data_ptr() < self._span[1]:
                return host_empty(tuple(out.shape), out.dtype, pin).copy_(out)
            return out
        if isinstance(out, tuple):
            items = [self._private(t, pin) for t in out]
            return type(out)(*items) if hasattr(out, "_fields") else tuple(items)
        return out
