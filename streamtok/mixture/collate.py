"""The mixture's batch stage: what ``loader({name: source}, weights=...)`` hands the DataLoader.

A :class:`Mixture` plays the part a :class:`~streamtok.Collator` plays for one source: its
:class:`~streamtok.mixture.sampler.MixtureSampler` orders the windows, and one reader over
every source's shards gathers them, so the DataLoader, page hints and metrics work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._chain import Stage
from ..collate import Collator
from ..errors import ConfigError
from ..reader import MemmapReader
from ..shards import ShardLister
from .caps import MaxEpochs
from .sampler import MixtureSampler
from .schedule import Weights


class Mixture(Stage):
    """The batch stage of a mixture: a :class:`MixtureSampler` and the gather of one joint reader.

    Used where a :class:`Collator` is (``StreamtokLoader(Mixture(...))``); chained form ``.loader(...)``.

    Args:
        source: the :class:`MixtureSampler`.
        reader: a :class:`MemmapReader` over every source's shards, in source order.
        dtype, vocab_size: as for :class:`Collator`.
    """

    def __init__(self, source: MixtureSampler, reader: MemmapReader, *, dtype: Any = None, vocab_size: int | None = None):
        kw = {} if dtype is None else {"dtype": dtype}
        self._collator = Collator(reader, seq_len=source.seq_len, vocab_size=vocab_size, **kw)
        self.source, self.reader = source, reader
        self.batch_size, self.seq_len = source.batch_size, source.seq_len
        self.dtype, self.vocab_size = self._collator.dtype, vocab_size
        self.transport_dtype = self._collator.transport_dtype
        self.gather = self._collator.gather
        self.attach = self._collator.attach  # a plain batch: nothing added to it

    def __repr__(self) -> str:
        return f"Mixture(sources={list(self.source.names)}, batch_size={self.batch_size}, seq_len={self.seq_len})"


def build(
    sources: Mapping[str, Any], weights: Weights, *, seq_len: int, batch_size: int, split: str, holdout: int,
    mode: str, seed: int, epochs: int | None, primary: str | None, rank: int | None, world_size: int | None,
    reader_kw: dict[str, Any], dtype: Any, vocab_size: int | None, max_epochs: MaxEpochs | None = None,
) -> Mixture:
    """The :class:`Mixture` for ``loader({name: source, ...}, weights=...)``."""
    if not sources:
        raise ConfigError("a mixture needs at least one source")
    if weights is None:
        raise ConfigError(f"a mixture of sources {sorted(sources)} needs weights={{name: weight}}")
    listers = {}
    for name, src in sources.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"mixture source names must be non-empty strings, not {name!r}")
        lister = src if isinstance(src, ShardLister) else ShardLister(src, storage_options=reader_kw.get("storage_options"))
        listers[name] = lister.split(split, holdout)
    plain = {k: v for k, v in reader_kw.items() if k in ("raw_dtype", "storage_options")}
    readers = {n: MemmapReader(lister, **plain) for n, lister in listers.items()}
    sampler = MixtureSampler(
        readers, weights, seq_len=seq_len, mode=mode, seed=seed, epochs=epochs, primary=primary,
        batch_size=batch_size, rank=rank, world_size=world_size, max_epochs=max_epochs,
    )
    joint_lister = ShardLister([p for lister in listers.values() for p in lister.paths], storage_options=reader_kw.get("storage_options"))
    for lister in listers.values():  # what listings learned (sizes, ETags) saves the joint reader its HEADs
        joint_lister.objects.update(lister.objects)
    joint = MemmapReader(joint_lister, **reader_kw)
    return Mixture(sampler, joint, dtype=dtype, vocab_size=vocab_size)
