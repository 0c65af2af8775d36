"""Mixtures: rows from several weighted sources in an exact, resumable schedule.

    schedule.py  which source each slot of a global step reads (weights over steps, anchors)
    caps.py      repetition caps (max_epochs): a source out after x of its epochs, its share renormalised
    sampler.py   MixtureSampler: every source's own order, interleaved by the schedule
    collate.py   Mixture: the sampler and one reader over all sources, for the DataLoader
"""

from __future__ import annotations

from .._lazy import lazy_names

_NAMES = {
    "Anchor": "schedule",
    "Timeline": "schedule",
    "Weights": "schedule",
    "parse_weights": "schedule",
    "STATE_VERSION": "sampler",
    "MixturePosition": "sampler",
    "MixtureSampler": "sampler",
    "Mixture": "collate",
    "build": "collate",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
