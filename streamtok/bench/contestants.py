"""The contestants of ``streamtok bench``: each is a factory of an endless batch iterator.

A contestant is named ``kind[:option=value,...]`` (``streamtok:mode=shuffle,workers=2``) and
built by :func:`make` from the data directory and the batch shape. Peers are written here
from their published designs, so the comparison runs on the same data, shapes and machine:

- ``nanogpt``: nanoGPT's ``get_batch`` — a new ``np.memmap`` per call, ``torch.randint``
  starts, per-row int64 ``from_numpy`` + ``torch.stack`` (the 1x baseline).
- ``mapstyle``: a per-sample map-style ``Dataset`` (one window per ``__getitem__``, int64
  ``(x, y)``) through ``StatefulDataLoader`` with the default collate and a random sampler.
- ``floor``: one vectorized numpy gather of a batch (``arr[starts[:, None] + arange]``,
  upcast to int64) from a warm memmap, starts drawn beforehand: no sampler, no Python per row.
- ``streamtok``: :func:`streamtok.loader` with ``mode``, ``workers``, ``out``
  (``int64``: ``(x, y)``; ``compact``: ``iter_compact``; ``prefetch``: ``CUDAPrefetcher``,
  CPU path here), ``mix`` (``mix=3``: a mixture of 3 sources, one shard each, taken in
  turn from the data's shards, weights 0.6/0.3/0.1), and any reader option (``advice``, ``lookahead``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._formats import probe_shard

Factory = Callable[[], Iterator[Any]]


@dataclass(frozen=True)
class Shape:
    """What every contestant delivers per batch: ``batch_size`` rows of ``seq_len`` tokens."""

    batch_size: int
    seq_len: int


def parse(name: str) -> tuple[str, dict[str, str]]:
    """``"streamtok:mode=random,workers=2"`` -> ``("streamtok", {"mode": "random", "workers": "2"})``."""
    kind, _, rest = name.partition(":")
    options = dict(item.split("=", 1) for item in rest.split(",") if item)
    return kind, options


def shard_files(data: Path) -> list[Path]:
    return sorted(p for p in Path(data).iterdir() if p.suffix in (".bin", ".npy") and not p.name.startswith("."))


def _nanogpt(data: Path, shape: Shape, opts: dict[str, str]) -> Factory:
    path = shard_files(data)[0]
    info = probe_shard(path)
    B, T = shape.batch_size, shape.seq_len

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        # nanoGPT train.py: "recreate np.memmap every batch to avoid a memory leak"
        mm = np.memmap(path, dtype=info.dtype, mode="r", offset=info.offset, shape=(info.n_tokens,))
        ix = torch.randint(len(mm) - T, (B,))
        x = torch.stack([torch.from_numpy(mm[i : i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(mm[i + 1 : i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    def batches() -> Iterator[Any]:
        while True:
            yield get_batch()

    return batches


class _WindowDataset(torch.utils.data.Dataset):
    """The per-sample map-style peer: window ``i`` of a memmap, as int64 ``(x, y)``."""

    def __init__(self, path: Path, seq_len: int):
        self.path, self.seq_len = path, seq_len
        info = probe_shard(path)
        self.dtype, self.offset, self.n_tokens = info.dtype, info.offset, info.n_tokens
        self._mm: np.ndarray | None = None

    def __len__(self) -> int:
        return (self.n_tokens - 1) // self.seq_len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mm is None:  # opened in the process that reads
            self._mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.n_tokens,))
        s = i * self.seq_len
        w = torch.from_numpy(self._mm[s : s + self.seq_len + 1].astype(np.int64))
        return w[:-1], w[1:]


def _mapstyle(data: Path, shape: Shape, opts: dict[str, str]) -> Factory:
    from torchdata.stateful_dataloader import StatefulDataLoader

    workers = int(opts.get("workers", 0))
    dataset = _WindowDataset(shard_files(data)[0], shape.seq_len)

    def batches() -> Iterator[Any]:
        while True:
            with warnings.catch_warnings():  # torchdata 0.11 calls a deprecated torch API
                warnings.filterwarnings("ignore", message=".*set_vital.*")
                loader = StatefulDataLoader(
                    dataset, batch_size=shape.batch_size, shuffle=True, num_workers=workers, drop_last=True
                )
            yield from loader

    return batches


def _floor(data: Path, shape: Shape, opts: dict[str, str]) -> Factory:
    path = shard_files(data)[0]
    info = probe_shard(path)
    mm = np.memmap(path, dtype=info.dtype, mode="r", offset=info.offset, shape=(info.n_tokens,))
    rng = np.random.default_rng(0)
    width = np.arange(shape.seq_len + 1)
    # Fresh windows for every batch of a run (no revisits that other contestants do not get).
    pool = rng.integers(0, info.n_tokens - shape.seq_len - 1, (4096, shape.batch_size, 1))

    def batches() -> Iterator[Any]:
        k = 0
        while True:
            b = mm[pool[k % len(pool)] + width].astype(np.int64)
            k += 1
            yield b[:, :-1], b[:, 1:]

    return batches


_READER_OPTIONS = {"advice": str, "lookahead": int, "max_open": int}


def _streamtok(data: Path, shape: Shape, opts: dict[str, str]) -> Factory:
    import streamtok

    kw: dict[str, Any] = {k: conv(opts[k]) for k, conv in _READER_OPTIONS.items() if k in opts}
    if kw.get("advice") == "none":
        kw["advice"] = None
    out = opts.get("out", "int64")
    source: Any = str(data)
    if "mix" in opts:  # the same shards, as n sources of one shard each
        files = [str(p) for p in shard_files(data)]
        n = int(opts["mix"])
        source = {f"source{i}": [files[i % len(files)]] for i in range(n)}
        shares = [0.6, 0.3, 0.1] if n == 3 else [1.0] * n
        kw["weights"] = dict(zip(source, shares))

    def batches() -> Iterator[Any]:
        loader = streamtok.loader(
            source, seq_len=shape.seq_len, batch_size=shape.batch_size, split="all",
            mode=opts.get("mode", "shuffle"), seed=int(opts.get("seed", 0)), epochs=None,
            num_workers=int(opts.get("workers", 0)), **kw,
        )
        if out == "compact":
            return loader.iter_compact()
        if out == "prefetch":
            return iter(streamtok.CUDAPrefetcher(loader, device="cpu"))
        return iter(loader)

    return batches


KINDS: dict[str, Callable[[Path, Shape, dict[str, str]], Factory]] = {
    "floor": _floor,
    "mapstyle": _mapstyle,
    "nanogpt": _nanogpt,
    "streamtok": _streamtok,
}


def make(name: str, data: Path, shape: Shape) -> Factory:
    """The batch-iterator factory of contestant ``name`` over the shards in ``data``."""
    kind, opts = parse(name)
    if kind not in KINDS:
        raise ValueError(f"unknown contestant {name!r}; kinds: {sorted(KINDS)}")
    return KINDS[kind](Path(data), shape, opts)
