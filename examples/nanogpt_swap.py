"""Swap nanoGPT's ``get_batch`` for streamtok, keeping nanoGPT's ``train.py`` loop as it is.

nanoGPT re-opens ``np.memmap`` on every call, draws starts with ``torch.randint`` and stacks
``2*B`` int64 tensors in a Python loop; its order cannot be checkpointed. The change to
``train.py`` is three small edits:

1. After the config and DDP setup (``ddp_rank``, ``ddp_world_size``, ``device_type`` known),
   replace the whole ``def get_batch(split): ...`` with::

       from nanogpt_swap import make_get_batch   # this file, copied next to train.py
       get_batch, loader_state = make_get_batch(
           data_dir, block_size=block_size, batch_size=batch_size, device=device,
           rank=ddp_rank if ddp else 0, world_size=ddp_world_size if ddp else 1)

2. In the checkpoint dict, add ``'loader': loader_state.state_dict(),``.
3. Where ``init_from == 'resume'`` loads the checkpoint, add
   ``loader_state.load_state_dict(checkpoint['loader'])`` (before the first ``get_batch``).

Everything else (``estimate_loss``, gradient accumulation, the ``X, Y = get_batch('train')``
prefetch line) stays. ``train.bin``/``val.bin`` are read as raw uint16, as nanoGPT writes
them; llm.c ``.bin`` shards or a directory of them work too.

Differences to know: ranks share one seed and split each step between them (nanoGPT seeds
each rank differently), and ``random`` mode is nanoGPT's sampling with replacement; use
``mode="shuffle"`` to see every window once per epoch instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

import streamtok


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
) -> tuple[Callable[[str], tuple[torch.Tensor, torch.Tensor]], streamtok.CUDAPrefetcher]:
    """A drop-in ``get_batch(split)`` and the object whose state goes into checkpoints."""
    cuda = str(device).startswith("cuda")

    def make(split: str, split_mode: str, workers: int) -> streamtok.CUDAPrefetcher:
        loader = streamtok.loader(
            os.path.join(data_dir, f"{split}.bin"), split="all", seq_len=block_size,
            batch_size=batch_size, mode=split_mode, seed=seed, epochs=None,
            rank=rank, world_size=world_size, num_workers=workers, pin_memory=cuda,
        )
        return streamtok.CUDAPrefetcher(loader, device=device)

    prefetchers = {"train": make("train", mode, num_workers), "val": make("val", "random", 0)}
    iterators: dict[str, object] = {}

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in iterators:
            iterators[split] = iter(prefetchers[split])
        return next(iterators[split])  # type: ignore[call-overload]

    return get_batch, prefetchers["train"]
