"""Where a prefetched batch goes: the CUDA device it is fixed to, and how it is staged there.

The CUDA bookkeeping of :class:`~streamtok.CUDAPrefetcher`, kept thin because CI has no GPU:

- the device index is fixed once, at construction (the argument, else ``LOCAL_RANK``, else
  the current device), so a prefetcher built before ``torch.cuda.set_device`` does not put
  every rank's batches on ``cuda:0``;
- staging enters that device explicitly (``torch.cuda.device``) around the side stream: a
  thread starts on device 0, and leaving ``torch.cuda.stream`` from there would make a CUDA
  context on GPU 0 (~0.5 GiB per rank);
- one event is recorded per batch after its copy, and the consumer's stream waits for that
  event only, not for the later batches already queued on the side stream.

Every CUDA call goes through the module attribute ``_cuda`` so that tests can replace it with
a recording stand-in and check this bookkeeping on a machine without a GPU.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .collate import split
from .errors import ConfigError

_cuda: Any = torch.cuda

Batch = Any


def split_compact(item: Batch, dtype: torch.dtype) -> Batch:
    """``(x, y)`` from a compact buffer, or ``(x, y, doc)`` from a document loader's ``(buf, doc)``."""
    if isinstance(item, tuple):
        buf, doc = item
        return (*split(buf, dtype), doc)
    return split(item, dtype)


def to_device(item: Batch, device: torch.device, non_blocking: bool) -> Batch:
    """``item`` with every tensor in it (tuples, namedtuples, lists, dicts) moved to ``device``."""
    if isinstance(item, torch.Tensor):
        return item.to(device, non_blocking=non_blocking)
    if isinstance(item, tuple) and hasattr(item, "_fields"):  # a namedtuple takes fields, not an iterable
        return type(item)(*(to_device(i, device, non_blocking) for i in item))
    if isinstance(item, (tuple, list)):
        return type(item)(to_device(i, device, non_blocking) for i in item)
    if isinstance(item, dict):
        return {k: to_device(v, device, non_blocking) for k, v in item.items()}
    return item


def tensors(item: Batch) -> Iterator[torch.Tensor]:
    """The tensors in ``item``, depth first."""
    if isinstance(item, torch.Tensor):
        yield item
    elif isinstance(item, (tuple, list)):
        for i in item:
            yield from tensors(i)
    elif isinstance(item, dict):
        for v in item.values():
            yield from tensors(v)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device batches go to, with a fixed index on CUDA.

    Args:
        device: ``None`` (CUDA when available, else CPU), ``"cuda"`` (index from
            ``LOCAL_RANK``, else the current device), ``"cuda:N"``, or ``"cpu"``.

    Raises:
        ConfigError: CUDA asked for where there is none, or an index no visible GPU has.
    """
    if device is None:
        device = "cuda" if _cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda":
        return device
    if not _cuda.is_available():
        raise ConfigError(f"device {device} asked for, but CUDA is not available here")
    count = _cuda.device_count()
    env = os.environ.get("LOCAL_RANK", "")
    local = int(env) if env.isdigit() else None
    if device.index is not None:
        index = device.index
    elif local is not None and local < count:
        index = local
    else:
        index = _cuda.current_device()
    if not 0 <= index < count:
        raise ConfigError(f"device cuda:{index} asked for, but this process sees {count} CUDA device(s)")
    if local is not None and index != local and (local < count or count > 1):
        warnings.warn(
            f"CUDAPrefetcher puts batches on cuda:{index}, but LOCAL_RANK={local}: ranks of one "
            f"node may share a GPU; pass device=f'cuda:{{local_rank}}' or call "
            "torch.cuda.set_device(local_rank) first",
            stacklevel=3,
        )
    return torch.device("cuda", index)


class CPUStage:
    """Staging without CUDA: the split and upcast happen on the host, nothing waits."""

    def __init__(self, device: torch.device):
        self.device = device

    def enter_thread(self) -> None:
        """Nothing to set up in a background thread."""

    def stage(self, item: Batch, compact: bool, dtype: torch.dtype) -> Batch:
        """The batch as the consumer gets it."""
        if compact:
            return split_compact(item, dtype)
        return to_device(item, self.device, non_blocking=False)

    def ready(self, staged: Batch) -> Batch:
        """The staged batch, usable now."""
        return staged


class CUDAStage:
    """Staging on a side stream of one fixed device; ``ready`` waits for that batch's event."""

    def __init__(self, device: torch.device):
        self.device = device
        with _cuda.device(device.index):
            self.stream = _cuda.Stream(device=device)

    def enter_thread(self) -> None:
        """Make this device the background thread's current one (it starts on device 0)."""
        _cuda.set_device(self.device.index)

    def stage(self, item: Batch, compact: bool, dtype: torch.dtype) -> tuple[Batch, Any]:
        """Queue the copy (and split) of ``item`` on the side stream; the batch and its event."""
        with _cuda.device(self.device.index), _cuda.stream(self.stream):
            moved = to_device(item, self.device, non_blocking=True)
            batch = split_compact(moved, dtype) if compact else moved
            done = _cuda.Event()
            done.record(self.stream)
        return batch, done

    def ready(self, staged: tuple[Batch, Any]) -> Batch:
        """Make the consumer's current stream wait for this batch's copy, and hand it out."""
        batch, done = staged
        current = _cuda.current_stream(self.device)
        current.wait_event(done)
        for t in tensors(batch):
            t.record_stream(current)  # the allocator must not reuse it before compute is done
        return batch
