"""Lightning: a LightningDataModule of streamtok loaders, resumed exactly from Trainer checkpoints.

What Lightning does with a streamtok loader (lightning 2.6, ``trainer/connectors/data_connector.py``
and ``loops/fit_loop.py``), and what :class:`StreamtokDataModule` adds:

- ``use_distributed_sampler`` does not re-wrap it: Lightning skips loaders whose dataset is
  an ``IterableDataset``, and a streamtok loader already reads only this rank's batches.
- A checkpoint taken mid-epoch holds the loader's ``state_dict()`` (the fit loop saves the
  state of every training loader that has one) and a resume loads it, so the epoch goes on
  after the last batch trained. Lightning reads a loader *with a length* without reading
  ahead; one without a length (``epochs=None``) it reads one batch ahead, which would put the
  saved position one batch past the last one trained: this module refuses such a loader (give
  ``epochs=`` so that one Lightning epoch is one pass; a mixture: ``primary=``).
- Lightning takes ``len()`` of the training loader as the length of *every* epoch, also
  when measured after a mid-epoch resume, where a streamtok loader's ``len()`` is what is
  left of its pass: the resumed epoch, and each one after it, would end early. The module
  hands Lightning :class:`EpochLoader`, the loader with the length of a whole pass.
- A checkpoint taken at the end of an epoch is loaded without the loader's state (Lightning
  loads loader states only when restarting inside an epoch): a fresh loader would begin at
  epoch 0 again, replaying its order. The module saves the train loader's state in its own
  ``state_dict()`` (Lightning stores it in every checkpoint) and, when Lightning starts a new
  epoch from a checkpoint, loads it before the first batch: a position at the end of its pass
  then starts the next epoch of the data. (Inside an epoch it leaves the load to Lightning,
  which measures the epoch's length first.)

Each rank builds its own loader in ``train_dataloader()``, once the process group exists, and
it is checked against the Trainer's data-parallel place (``distributed_sampler_kwargs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl

from ..dataloader import StreamtokLoader
from ..errors import ConfigError
from ._checks import check_place, streamtok_loader

__all__ = ["EpochLoader", "StreamtokDataModule"]

LoaderFactory = Callable[[], StreamtokLoader]


class EpochLoader:
    """A streamtok loader as Lightning's training loop expects one: ``len()`` is a whole pass.

    Iteration and ``state_dict``/``load_state_dict`` are the loader's own (Lightning saves and
    loads them with its checkpoints); only the length differs: the pass's full number of
    steps, measured when the loader is fresh, whatever the position.

    Args:
        loader: a fresh, finite :class:`~streamtok.StreamtokLoader` (no state loaded yet).
    """

    def __init__(self, loader: StreamtokLoader):
        self.loader = streamtok_loader(loader, "EpochLoader")
        try:
            self.steps = len(loader)
        except TypeError:
            raise ConfigError(
                "the train loader is endless (epochs=None): Lightning reads one batch ahead of a loader "
                "without a length, so its checkpoints would skip a batch. Give streamtok.loader "
                "epochs=1 (a mixture: primary=NAME)"
            ) from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return self.steps

    def state_dict(self) -> dict[str, Any]:
        """The loader's position (see :meth:`StreamtokLoader.state_dict`)."""
        return self.loader.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the loader (see :meth:`StreamtokLoader.load_state_dict`)."""
        self.loader.end_pass()  # Lightning may have left the last epoch's iterator open
        self.loader.load_state_dict(state_dict)


class StreamtokDataModule(pl.LightningDataModule):
    """Training (and validation) batches from streamtok loaders, one per rank.

    Args:
        train: builds the training loader, e.g. ``lambda: streamtok.loader(data, seq_len=T,
            batch_size=B)``; called once, in ``train_dataloader()`` on each rank. Its
            ``epochs`` is the number of data epochs in one Lightning epoch (1, the default);
            it must be finite.
        val: builds the validation loader (e.g. ``mode="sequential"``), or ``None``.
    """

    def __init__(self, train: LoaderFactory, val: LoaderFactory | None = None):
        super().__init__()
        self._make_train, self._make_val = train, val
        self._train: EpochLoader | None = None
        self._val: StreamtokLoader | None = None
        self._pending: dict[str, Any] | None = None  # a loaded train state, until the loader exists

    def train_dataloader(self) -> EpochLoader:
        """This rank's training loader (built once), at the loaded position if a checkpoint was loaded."""
        if self._train is None:
            self._train = EpochLoader(self._built(self._make_train, "train"))
        if self._pending is not None:
            # Inside an epoch Lightning loads the loader's state itself; at an epoch's end it
            # does not, and the epoch to start is the data's next one.
            fit_loop = getattr(self.trainer, "fit_loop", None) if self.trainer is not None else None
            if fit_loop is None or not fit_loop.restarting:
                self._apply(self._pending)
            self._pending = None
        return self._train

    def val_dataloader(self) -> Any:
        """This rank's validation loader (built once; each validation reads it all), or ``[]``."""
        if self._make_val is None:
            return []
        if self._val is None:
            self._val = self._built(self._make_val, "val")
        return self._val

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position (the pending one if not yet applied); ``{}`` before any."""
        if self._train is not None:
            return {"train": self._train.state_dict()}
        return {} if self._pending is None else {"train": self._pending}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training loader where the checkpoint's state says (on every rank)."""
        train = state_dict.get("train") if isinstance(state_dict, dict) else None
        if train is None:
            return
        if self._train is None:
            self._pending = train
        else:
            self._apply(train)

    def _apply(self, state: dict[str, Any]) -> None:
        train = self._train
        assert train is not None
        train.load_state_dict(state)
        if len(train.loader) == 0:
            # Saved after the last batch of its pass, as an end-of-epoch checkpoint is: the
            # pass is spent, and the next Lightning epoch is the next epoch of the data.
            for _ in train.loader:
                pass

    def _built(self, make: LoaderFactory, which: str) -> StreamtokLoader:
        loader = streamtok_loader(make(), f"StreamtokDataModule({which}=...)")
        kw = getattr(self.trainer, "distributed_sampler_kwargs", None) if self.trainer is not None else None
        rank, world = (kw["rank"], kw["num_replicas"]) if kw else (0, 1)
        check_place(loader, rank, world, f"StreamtokDataModule({which}=...)")
        return loader
