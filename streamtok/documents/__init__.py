"""Document-aware rows: boundaries marked (``"mask"``), rows from document starts (``"bos"``),
whole documents packed best-fit (``"pack"``).

    sidecar.py   the ``.docidx`` files: each shard's document starts, scanned once, kept beside it
    boundary.py  which token starts a document: bos_id, the checked tokenize manifest, the format
    index.py     DocumentIndex (starts over the reader's token space) and Documents (a batch's)
    samplers.py  the bos and mask samplers (window samplers that record each step's plan)
    pack.py      PackSampler: rows of whole documents, best-fit, exactly resumable
    bestfit.py   the best-fit packer of one block, compiled with numba (a Python loop without it)
    rows.py      PackedRowIndex: a source's packed rows numbered across epochs (mixtures)
    windowtable.py  mask's per-window table of document columns
    collate.py   DocumentCollator: ``(x, y, doc)``; ``document_collator`` picks the pieces

Names are imported on first use (``sidecar`` and ``boundary`` need no torch: ``streamtok tokenize`` and
``inspect`` use them).
"""

from __future__ import annotations

from .._lazy import lazy_names

_NAMES = {
    "SIDECAR_SUFFIX": "sidecar",
    "DocumentStats": "sidecar",
    "cache_dir": "sidecar",
    "default_bos_id": "sidecar",
    "document_starts": "sidecar",
    "document_stats": "sidecar",
    "scan_document_starts": "sidecar",
    "sidecar_paths": "sidecar",
    "stats_of_starts": "sidecar",
    "write_document_index": "sidecar",
    "Boundary": "boundary",
    "TokenizeRecord": "boundary",
    "boundary_token": "boundary",
    "format_boundary": "boundary",
    "resolve_boundary": "boundary",
    "shard_boundary": "boundary",
    "tokenize_record": "boundary",
    "DocumentIndex": "index",
    "Documents": "index",
    "documents_from_starts": "index",
    "position_ids": "index",
    "DocStartSampler": "samplers",
    "MaskSampler": "samplers",
    "PackSampler": "pack",
    "DOCUMENT_MODES": "collate",
    "DocumentCollator": "collate",
    "document_collator": "collate",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
