"""Collator: ``B`` window starts -> one compact buffer -> ``(x, y)``.

A batch is gathered into one ``(B, T+1)`` buffer in the tokens' stored dtype (uint16 for
GPT-2: 4x fewer bytes than int64 through shared memory, pinned memory and PCIe), with one
slice copy per window. Inside a DataLoader worker the buffer is a shared slot made by the
loader (:mod:`streamtok._ring`), so sending it to the trainer costs no extra copy. :func:`split` turns it into
``x = buf[:, :-1]`` and ``y = buf[:, 1:]`` in the output dtype, as late as possible: at the
end of the loader on CPU, or on the GPU in :class:`~streamtok.CUDAPrefetcher`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ._chain import Stage, chained
from .errors import ConfigError, TokenRangeError
from .reader import MemmapReader
from .sampler import WindowSampler

# Stored dtype -> the dtype batches travel in. uint32 ids (Llama 3 vocabularies, < 2**31)
# travel as int32, which every torch backend converts; the bits are reinterpreted, not copied.
_TRANSPORT = {np.dtype(np.uint32): np.dtype(np.int32), np.dtype(np.uint64): np.dtype(np.int64)}


@functools.lru_cache(maxsize=None)
def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype (``torch.int64`` -> ``int64``)."""
    return torch.empty(0, dtype=dtype).numpy().dtype


def split(buf: torch.Tensor, dtype: torch.dtype = torch.int64, *, pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a ``(B, T+1)`` buffer: inputs and the targets one token later.

    Both are new contiguous tensors, never views of ``buf``: a loader's buffer may be a shared
    slot that a worker refills once the batch is taken (numpy returns a *view* for a ``(1, T)``
    slice of the wanted dtype, so the copy is explicit). Works on any device; on CPU the
    copy runs in numpy, about twice as fast as torch for this strided copy.

    Args:
        buf: the compact batch.
        dtype: dtype of ``x`` and ``y``.
        pin: on CPU, write ``x`` and ``y`` straight into page-locked memory (needs CUDA).
    """
    rows, cols = buf.shape[0], buf.shape[1] - 1
    if buf.device.type == "cpu":
        a = buf.numpy()
        x, y = host_empty((rows, cols), dtype, pin), host_empty((rows, cols), dtype, pin)
        np.copyto(x.numpy(), a[:, :-1], casting="unsafe")  # as astype: ids fit every int dtype used
        np.copyto(y.numpy(), a[:, 1:], casting="unsafe")
        return x, y
    x = torch.empty((rows, cols), dtype=dtype, device=buf.device).copy_(buf[:, :-1])
    return x, torch.empty((rows, cols), dtype=dtype, device=buf.device).copy_(buf[:, 1:])


def host_empty(shape: tuple[int, ...], dtype: torch.dtype, pin: bool = False) -> torch.Tensor:
    """An uninitialised CPU tensor, in page-locked memory with ``pin`` (the one place that pins).

    Args:
        shape: its shape.
        dtype: its torch dtype.
        pin: allocate through CUDA's caching host allocator, so a ``non_blocking`` copy to
            the GPU is truly asynchronous.
    """
    if pin:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    return torch.from_numpy(np.empty(shape, dtype=numpy_dtype(dtype)))  # ~1 µs, a third of torch.empty's


def new_buffer(shape: tuple[int, int], dtype: np.dtype, shared: bool = False) -> torch.Tensor:
    """An uninitialised ``shape`` tensor of numpy ``dtype``; ``shared``: in shared memory (for workers)."""
    if not shared:
        return torch.from_numpy(np.empty(shape, dtype=dtype))  # ~1 µs, a third of torch.empty's
    tdtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    nbytes = shape[0] * shape[1] * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=tdtype).set_(storage, 0, shape, (shape[1], 1))


class Collator(Stage):
    """Batches of windows as ``(x, y)`` tensors.

    Chained forms: ``.loader(...)`` (a :class:`~streamtok.StreamtokLoader`).

    ``collator(starts)`` is a pure function of the reader and the starts; iterating the
    collator walks its sampler and yields one ``(x, y)`` per step.

    Args:
        source: a :class:`WindowSampler` (its ``batch_size`` is the number of rows unless
            ``batch_size`` is given here), or a :class:`MemmapReader` for the pure function
            alone (then ``seq_len`` is required and the collator cannot be iterated).
        batch_size: rows per batch ``B`` (re-batches the sampler when it differs).
        seq_len: tokens per row ``T``, with a reader as ``source``.
        dtype: dtype of ``x`` and ``y`` (default int64, what embedding layers and
            ``cross_entropy`` take).
        vocab_size: when given, every batch is checked and a token id ``>= vocab_size``
            or a negative one raises :class:`TokenRangeError` naming the shard and offset (costs
            one max per batch, and one min for signed dtypes).
    """

    def __init__(
        self,
        source: WindowSampler | MemmapReader,
        batch_size: int | None = None,
        *,
        seq_len: int | None = None,
        dtype: torch.dtype = torch.int64,
        vocab_size: int | None = None,
    ):
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"dtype must be a torch.dtype such as torch.int64, not {dtype!r}")
        if vocab_size is not None and vocab_size < 1:
            raise ConfigError(f"vocab_size must be positive, not {vocab_size}")
        if isinstance(source, MemmapReader):
            if seq_len is None or seq_len < 1:
                raise ConfigError("a Collator over a MemmapReader needs seq_len (tokens per row)")
            self.source: WindowSampler | None = None
            self.reader = source
            self._batch_size, self._seq_len = batch_size, int(seq_len)
        else:
            if batch_size is not None and batch_size != source.batch_size:
                source = source.rebatch(batch_size)
            if seq_len is not None and seq_len != source.seq_len:
                raise ConfigError(f"seq_len={seq_len} disagrees with the sampler's seq_len={source.seq_len}")
            self.source = source
            self.reader = source.source
            self._batch_size, self._seq_len = source.batch_size, source.seq_len
        self.dtype = dtype
        self.vocab_size = vocab_size
        stored = np.dtype(self.reader.dtype)
        self.transport_dtype = _TRANSPORT.get(stored, stored)
        self._stored = stored

    @property
    def batch_size(self) -> int | None:
        """Rows per batch (``None`` for a reader-only collator: as many as starts given)."""
        return self._batch_size

    @property
    def seq_len(self) -> int:
        return self._seq_len

    @property
    def sampler(self) -> WindowSampler:
        """The sampler that orders this collator's batches."""
        if self.source is None:
            raise TypeError("this Collator was built on a MemmapReader and has no sample order; build it on a WindowSampler")
        return self.source

    def __repr__(self) -> str:
        return f"Collator(batch_size={self.batch_size}, seq_len={self.seq_len}, dtype={self.dtype})"

    def gather(self, starts: np.ndarray, *, shared: bool = False, into: torch.Tensor | None = None) -> torch.Tensor:
        """The compact ``(B, T+1)`` buffer of the windows at ``starts``, in the transport dtype.

        ``into``: a buffer of that shape and dtype to fill instead of allocating one.
        """
        shape = (len(starts), self.seq_len + 1)
        buf = new_buffer(shape, self.transport_dtype, shared) if into is None else into
        out = buf.numpy()
        if self.transport_dtype != self._stored:
            out = out.view(self._stored)
        self.reader.gather(starts, shape[1], out)
        if self.vocab_size is not None:
            self._check_range(out, starts)
        return buf

    def __call__(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the windows at ``starts`` (each in ``[0, n_tokens - seq_len - 1]``)."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        last = self.reader.n_tokens - self.seq_len - 1
        if len(starts) and (starts.min() < 0 or starts.max() > last):
            raise ConfigError(
                f"{self.reader.describe()}: window starts must lie in [0, {last}] for seq_len "
                f"{self.seq_len}; got {int(starts.min())}..{int(starts.max())}"
            )
        return split(self.gather(starts), self.dtype)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for starts in self.sampler:
            yield self(starts)

    def __len__(self) -> int:
        return len(self.sampler)

    def attach(self, batches: Iterator[Any], *, pass_start: Callable[[], Any], direct: bool, compact: bool) -> Iterator[Any]:
        """What the DataLoader yields for one pass's ``batches``: here the batches themselves.

        A collator that adds to each batch (the document collator: ``doc``) overrides this;
        ``pass_start()`` is where the pass began, ``direct`` says the batches were gathered in
        this process (no workers), ``compact`` that they are ``(B, T+1)`` buffers, not ``(x, y)``.
        """
        return batches

    def _check_range(self, out: np.ndarray, starts: np.ndarray) -> None:
        if int(out.max()) < self.vocab_size and (out.dtype.kind == "u" or int(out.min()) >= 0):
            return
        row, col = np.unravel_index(int(np.argmax((out >= self.vocab_size) | (out < 0))), out.shape)
        pos = int(starts[row]) + int(col)
        k = int(self.reader.locate(np.array([pos]))[0])
        info = self.reader.infos[k]
        value = int(out[row, col])
        what = "is negative" if value < 0 else f"is not below vocab_size {self.vocab_size}"
        raise TokenRangeError(
            f"{info.path}: token {value} at token offset {pos - int(self.reader.offsets[k])} "
            f"{what}; the shard was made with another "
            f"tokenizer or is corrupt (check it with `streamtok inspect --check {os.path.basename(info.path)}`)"
        )


@chained(WindowSampler)
def batch(self: WindowSampler, batch_size: int, **kw: Any) -> Collator:
    """A :class:`Collator` making ``(x, y)`` batches of ``batch_size`` windows."""
    return Collator(self.rebatch(batch_size), **kw)
