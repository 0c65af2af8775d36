"""torchtitan: a streamtok loader behind torchtitan's data-loader interface, resumable at any DP size.

torchtitan's own ``ParallelAwareDataloader`` (torchtitan 0.3, ``components/dataloader.py``)
saves one state per data-parallel rank, under ``dp_rank_<r>``, and refuses to load at another
data-parallel degree ("dataloader resharding is not supported yet"; torchtitan #811/#816).
A streamtok position is one position for every rank (global step ``g`` is windows
``[g*B*W, (g+1)*B*W)`` of the epoch's order; rank ``r`` reads its ``B``), so
:class:`TitanLoader` saves it under one key, ``streamtok``, the same on every rank. DCP keeps
one copy of a key that several ranks save, and every rank reads that key back on load, at
whatever data-parallel degree the job restarts with: the epoch goes on with no window
repeated or skipped (the global batch ``B*W`` must stay the same, as for any resume that
continues a step count).

In a torchtitan job the trainer builds it from its config, as any torchtitan data loader::

    config.dataloader = TitanLoader.Config(dataset_path="data/shards")  # pre-tokenized shards

and calls ``config.dataloader.build(dp_world_size=..., dp_rank=..., seq_len=...,
local_batch_size=..., tokenizer=..., snapshot_every_n_steps=...)``; the tokenizer is not
needed (the shards are tokens already) and no snapshot interval either (streamtok's state is
exact after every batch). Batches are ``({"input": x}, y)``, as the trainer expects. Outside
the config system, :meth:`TitanLoader.wrap` takes a loader built with ``streamtok.loader``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torchtitan.components.dataloader import BaseDataLoader

from ..build import loader as build_loader
from ..dataloader import StreamtokLoader
from ..errors import ConfigError, StateMismatchError
from ._checks import streamtok_loader

__all__ = ["TitanLoader"]

STATE_KEY = "streamtok"


class TitanLoader(BaseDataLoader):
    """torchtitan's ``BaseDataLoader`` over a streamtok loader; its state is elastic.

    Args:
        config: a :class:`TitanLoader.Config` (``dataset_path``: the shards; ``dataset`` is
            not used).
        dp_world_size, dp_rank: this rank's data-parallel place.
        seq_len: tokens per row ``T``.
        local_batch_size: rows per batch on this rank ``B``.
        **runtime: the other objects torchtitan's trainer passes (``tokenizer``,
            ``snapshot_every_n_steps``), not needed here.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(BaseDataLoader.Config):
        split: str = "train"
        """Which shards: "train", "val" or "all" (see streamtok.ShardLister.split)."""

        mode: str = "shuffle"
        """Window order: "shuffle", "random" or "sequential"."""

        seed: int = 0
        """Picks the order."""

        epochs: int | None = None
        """Epochs to read; None streams on (torchtitan counts steps, not epochs)."""

        num_workers: int = 0
        """DataLoader worker processes; the stream is the same for any number."""

        pin_memory: bool = False
        """Pin batches for asynchronous copies to the GPU."""

    def __init__(
        self,
        config: Config,
        *,
        dp_world_size: int,
        dp_rank: int,
        seq_len: int,
        local_batch_size: int,
        **runtime: Any,
    ):
        if not config.dataset_path:
            raise ConfigError("TitanLoader.Config needs dataset_path: the token shards (a directory, glob or file)")
        self.config = config
        self.loader = build_loader(
            config.dataset_path, seq_len=seq_len, batch_size=local_batch_size,
            split=config.split, mode=config.mode, seed=config.seed, epochs=config.epochs,
            num_workers=config.num_workers, pin_memory=config.pin_memory, rank=dp_rank, world_size=dp_world_size,
        )

    @classmethod
    def wrap(cls, loader: StreamtokLoader) -> TitanLoader:
        """A TitanLoader over a loader built with ``streamtok.loader`` (its rank and world size are the DP ones)."""
        self = cls.__new__(cls)
        self.config = None
        self.loader = streamtok_loader(loader, "TitanLoader.wrap")
        return self

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        for x, y in self.loader:
            yield {"input": x}, y

    def state_dict(self) -> dict[str, Any]:
        """``{"streamtok": <the loader's state as JSON>}``: one value, the same key on every rank."""
        return {STATE_KEY: json.dumps(self.loader.state_dict(), sort_keys=True)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from a state saved at any data-parallel degree (empty: nothing to resume).

        Raises:
            StateMismatchError: the state is not a TitanLoader's (e.g. a ParallelAwareDataloader's
                ``dp_rank_<r>`` states), or belongs to other data or settings.
        """
        if not state_dict:
            return
        if STATE_KEY not in state_dict:
            raise StateMismatchError(
                f"the checkpoint's dataloader state has keys {sorted(state_dict)[:4]}, not {STATE_KEY!r}: it was "
                "saved by another torchtitan data loader (ParallelAwareDataloader saves dp_rank_<r>), "
                "which a streamtok loader cannot continue; exclude 'dataloader' from loading to start its data anew"
            )
        try:
            state = json.loads(state_dict[STATE_KEY])
        except (TypeError, ValueError) as exc:
            raise StateMismatchError(f"the checkpoint's {STATE_KEY!r} dataloader state is not JSON: {exc}") from None
        self.loader.load_state_dict(state)
