"""Swap nanoGPT's ``get_batch`` for streamtok, keeping nanoGPT's ``train.py`` loop, with exact resume.

nanoGPT re-opens ``np.memmap`` on every call, draws starts with ``torch.randint`` and stacks
``2*B`` int64 tensors in a Python loop; its order cannot be checkpointed. ``data_dir`` may hold
nanoGPT's own ``train.bin``/``val.bin`` (raw uint16) or be a directory of shards written by
``streamtok tokenize`` (``data_train_000000.bin``, ``data_val_000000.bin``, ...) or llm.c.

Two things in ``train.py`` make a resume inexact even with a checkpointed loader: the
checkpoint is written after the batch for the current step was already fetched (``X, Y`` are
fetched before the loop and at the end of every micro-step), and ``estimate_loss`` draws its
``eval_iters`` batches from the *training* stream and is run again at the resume step. So the
edits to ``train.py`` are four:

1. After the config and DDP setup (``ddp_rank``, ``ddp_world_size``, ``device`` known),
   replace the whole ``def get_batch(split): ...`` with::

       from nanogpt_swap import make_get_batch   # this file, copied next to train.py
       get_batch, loader_state = make_get_batch(
           data_dir, block_size=block_size, batch_size=batch_size, device=device,
           rank=ddp_rank if ddp else 0, world_size=ddp_world_size if ddp else 1)

2. In ``estimate_loss``, ``X, Y = get_batch(split)`` becomes ``X, Y = get_batch(split, eval_step=k)``:
   every evaluation then sees the same fixed ``eval_iters`` batches of each split, from
   streams of their own, and never advances the training stream.
3. In the checkpoint dict, add ``'loader': loader_state.resume_state(),`` -- the state *before*
   the batch in hand, so the resumed ``X, Y = get_batch('train')`` fetches that batch again
   (``state_dict()`` is the usual state after the last batch fetched, one batch later).
4. Where ``init_from == 'resume'`` loads the checkpoint, add
   ``loader_state.load_state_dict(checkpoint['loader'])`` (before the first ``get_batch``).

With ``dropout > 0`` also save and restore ``torch.get_rng_state()`` (nanoGPT does not).
``tests/test_nanogpt_swap.py`` runs a copy of ``train.py``'s loop (same order of fetch, eval,
save and micro-steps) with these edits and checks that the losses after a resume equal the
uninterrupted run's; without edit 2 they differ.

Differences to know: ranks share one seed and split each step between them (nanoGPT seeds
each rank differently), and ``random`` mode is nanoGPT's sampling with replacement; use
``mode="shuffle"`` to see every window once per epoch instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

import streamtok

Batch = tuple[torch.Tensor, torch.Tensor]


def split_source(data_dir: str, split: str) -> tuple[str, str]:
    """``(source, split)`` for :func:`streamtok.loader`: nanoGPT's ``<split>.bin`` when it is there, else the directory.

    Args:
        data_dir: nanoGPT's ``data/<dataset>`` or a directory of shards.
        split: ``"train"`` or ``"val"``.
    """
    single = os.path.join(data_dir, f"{split}.bin")
    if os.path.isfile(single):
        return single, "all"
    return data_dir, split  # shards named *_train_* / *_val_* (or the last shard held out)


class LoaderState:
    """The training stream's checkpoint: after the last batch fetched, or before the one held.

    nanoGPT fetches the next batch before it saves, so the usual state (after the last batch
    fetched) is one batch ahead of the step being saved; :meth:`resume_state` is the one before.

    Args:
        prefetcher: the training stream.
    """

    def __init__(self, prefetcher: streamtok.CUDAPrefetcher):
        self.prefetcher = prefetcher
        self.before_held: Any = prefetcher.state_dict()
        self._iter: Iterator[Batch] | None = None

    def next_batch(self) -> Batch:
        self.before_held = self.prefetcher.state_dict()
        if self._iter is None:
            self._iter = iter(self.prefetcher)
        return next(self._iter)

    def state_dict(self) -> Any:
        """The state after the last batch fetched (as any stateful loader's)."""
        return self.prefetcher.state_dict()

    def resume_state(self) -> Any:
        """The state before the last batch fetched: what nanoGPT's checkpoint needs (edit 3)."""
        return self.before_held

    def load_state_dict(self, state: Any) -> None:
        """Resume: the next training batch is the one after ``state`` (the held one for :meth:`resume_state`)."""
        if self._iter is not None:  # a prefetcher loads a state only between passes
            self._iter.close()  # type: ignore[attr-defined]
            self._iter = None
        self.prefetcher.load_state_dict(state)
        self.before_held = state


def make_get_batch(
    data_dir: str,
    *,
    block_size: int,
    batch_size: int,
    device: str,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 1337,
    mode: str = "random",
    num_workers: int = 2,
) -> tuple[Callable[..., Batch], LoaderState]:
    """A drop-in ``get_batch(split, eval_step=None)`` and the object whose state goes into checkpoints.

    Args:
        data_dir: nanoGPT's ``data/<dataset>`` (``train.bin``, ``val.bin``) or a shard directory.
        block_size: tokens per row.
        batch_size: rows per batch on this rank.
        device: where batches go (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
        rank: this process's DDP rank.
        world_size: the number of DDP ranks.
        seed: picks the training order.
        mode: ``"random"`` (nanoGPT's sampling) or ``"shuffle"``.
        num_workers: loader workers of the training stream.
    """
    cuda = str(device).startswith("cuda")

    def make(split: str, split_mode: str, workers: int, split_seed: int) -> streamtok.CUDAPrefetcher:
        source, which = split_source(data_dir, split)
        loader = streamtok.loader(
            source, split=which, seq_len=block_size, batch_size=batch_size, mode=split_mode,
            seed=split_seed, epochs=None, rank=rank, world_size=world_size, num_workers=workers, pin_memory=cuda,
        )
        return streamtok.CUDAPrefetcher(loader, device=device)

    train = LoaderState(make("train", mode, num_workers, seed))
    # Evaluation reads fixed batches of each split from streams apart from training's: the
    # same ones at every evaluation, restarted from their first state at eval_step 0.
    evals = {split: make(split, "random", 0, seed + 1) for split in ("train", "val")}
    starts = {split: p.state_dict() for split, p in evals.items()}
    eval_iters: dict[str, Iterator[Batch]] = {}

    def get_batch(split: str, eval_step: int | None = None) -> Batch:
        if split not in evals:
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        if eval_step is None and split == "train":
            return train.next_batch()
        if eval_step == 0 or split not in eval_iters:
            running = eval_iters.pop(split, None)
            if running is not None:  # end the last evaluation's pass before rewinding
                running.close()  # type: ignore[attr-defined]
            evals[split].load_state_dict(starts[split])
            eval_iters[split] = iter(evals[split])
        return next(eval_iters[split])

    return get_batch, train
