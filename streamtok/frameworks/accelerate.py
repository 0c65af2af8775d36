"""HF Accelerate: hand ``accelerator.prepare`` a streamtok loader without it splitting again.

What ``accelerator.prepare(loader)`` does to a plain streamtok loader (accelerate 1.16,
``accelerate/data_loader.py::prepare_data_loader``): it builds a *new* DataLoader over
``loader.dataset``, the loader's inner stream, and drops the StreamtokLoader itself. With its
default ``dispatch_batches`` (true for an iterable dataset) rank 0 reads and sends slices of
every batch to the others; with ``dispatch_batches=False`` it wraps the stream in an
``IterableDatasetShard`` that keeps every ``num_processes``-th item. Either way the per-rank
split streamtok already made would be split again, the new DataLoader batches ``batch_size``
of streamtok's batches together, and ``save_state`` would not hold streamtok's position
(the inner stream refuses to be read that way: a ConfigError says so).

The one right way is :func:`prepare_loader`: it marks the loader as already prepared (so
``accelerator.prepare`` returns that very loader, in any position of its arguments) and
registers it for checkpointing, so ``save_state`` writes its state once (by the main process,
``custom_checkpoint_<i>.pkl``) and ``load_state`` restores it on every rank. The state is one
position for all ranks, so the main process's copy resumes each rank exactly, also at another
number of processes. Batches stay where streamtok puts them (host memory): move them with
``.to(accelerator.device)``, or wrap the loader in :class:`streamtok.CUDAPrefetcher`.
"""

from __future__ import annotations

from typing import Any

from ..dataloader import StreamtokLoader
from ._checks import check_place, streamtok_loader

__all__ = ["prepare_loader"]


def prepare_loader(accelerator: Any, loader: StreamtokLoader) -> StreamtokLoader:
    """Register a streamtok loader with ``accelerator``; ``prepare`` then passes it through.

    Call it once per loader, before ``accelerator.load_state`` (custom objects are restored
    in the order they were registered). Do not use ``accelerator.skip_first_batches`` on it:
    the loaded state already continues after the last saved batch.

    Args:
        accelerator: an ``accelerate.Accelerator``.
        loader: a loader from :func:`streamtok.loader`, built for this process's rank (the
            default once the ``Accelerator`` exists, or under ``accelerate launch``/torchrun).

    Returns:
        ``loader`` itself, ready to iterate; ``accelerator.prepare(loader)`` returns it too.

    Raises:
        ConfigError: ``loader`` is not a StreamtokLoader, or reads for another rank or world
            size than ``accelerator.process_index``/``num_processes``.
    """
    loader = streamtok_loader(loader, "prepare_loader")
    check_place(loader, int(accelerator.process_index), int(accelerator.num_processes), "prepare_loader")
    # Accelerator.prepare_data_loader returns a loader carrying this mark as it is.
    loader._is_accelerate_prepared = True
    registered = getattr(accelerator, "_custom_objects", [])
    if not any(obj is loader for obj in registered):
        accelerator.register_for_checkpointing(loader)
    return loader
