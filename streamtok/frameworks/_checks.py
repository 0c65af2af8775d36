"""Checks shared by the framework adapters: is this a streamtok loader, and for which ranks."""

from __future__ import annotations

from typing import Any

from ..dataloader import StreamtokLoader
from ..errors import ConfigError


def streamtok_loader(loader: Any, where: str) -> StreamtokLoader:
    """``loader`` if it is a :class:`StreamtokLoader`, else a ConfigError naming ``where``."""
    if not isinstance(loader, StreamtokLoader):
        raise ConfigError(f"{where} needs a StreamtokLoader (from streamtok.loader(...)), not {type(loader).__name__}")
    return loader


def place(loader: StreamtokLoader) -> tuple[int, int]:
    """The ``(rank, world_size)`` the loader reads for."""
    sampler = loader.collator.source
    return int(sampler.rank), int(sampler.world_size)


def check_place(loader: StreamtokLoader, rank: int, world_size: int, where: str) -> None:
    """Refuse a loader built for another data-parallel place than the framework's.

    A loader built before the process group existed (and without ``RANK``/``WORLD_SIZE``)
    reads as rank 0 of 1: every rank would then train on the same batches.
    """
    got = place(loader)
    if got != (rank, world_size):
        raise ConfigError(
            f"{where}: the loader reads for rank {got[0]} of {got[1]}, but this process is data-parallel "
            f"rank {rank} of {world_size}; build the loader after the process group is set up, or pass "
            "rank=/world_size= (or group=) to streamtok.loader"
        )
