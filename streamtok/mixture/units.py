"""What one source of a mixture gives, unit by unit, in each documents mode.

A mixture counts units per source (DESIGN §7): unit ``k`` of a source is, by ``documents``,

- ``"stream"``, ``"mask"``: window ``k % n`` of its epoch ``k // n`` (a :class:`WindowSampler`
  of its own; ``"mask"`` reads the same windows and adds the boundaries);
- ``"bos"``: the row at document start ``k % n`` of its epoch ``k // n``
  (:class:`~streamtok.documents.samplers.DocStartSampler`: ``n`` usable document starts);
- ``"pack"``: packed row ``k`` of its row stream across epochs
  (:class:`~streamtok.documents.rows.PackedRowIndex`).

Each source reads its own documents with its own boundary token, so a row never mixes sources.
"""

from __future__ import annotations

from typing import Any

from .._position import boundary_mismatch
from ..documents.boundary import Boundary
from ..documents.index import DocumentIndex
from ..documents.rows import PackedRowIndex
from ..documents.samplers import DocStartSampler
from ..errors import ConfigError, StateMismatchError
from ..reader import MemmapReader
from ..sampler import WindowSampler

SOURCE_DOCUMENTS = ("stream", "mask", "bos", "pack")


def source_order(
    reader: MemmapReader, *, documents: str, seq_len: int, mode: str, seed: int, index: DocumentIndex | None,
    block_docs: int,
) -> WindowSampler | DocStartSampler | PackedRowIndex:
    """The order of one source's units (its seed already derived from the mixture's and its name).

    Args:
        reader: the source's own reader.
        documents: the mode (``SOURCE_DOCUMENTS``).
        seq_len, mode, seed: as for the mixture.
        index: the source's documents (``"bos"`` and ``"pack"``).
        block_docs: documents per packed block (``"pack"``).
    """
    if documents == "bos":
        return DocStartSampler(reader, seq_len, index=index, mode=mode, seed=seed, epochs=None, world_size=1, rank=0)
    if documents == "pack":
        return PackedRowIndex(reader, seq_len, index=index, mode=mode, seed=seed, block_docs=block_docs)
    return WindowSampler(reader, seq_len, mode=mode, seed=seed, epochs=None, world_size=1, rank=0)


def source_state(order: Any, count: int, boundary: Boundary | None = None) -> dict[str, Any]:
    """The keys a source adds to its entry in the mixture's state, besides data and count.

    ``boundary``: the token its documents are split at (every documents mode: ``bos_id=None``
    means what the data says, which may say another token at resume). ``bos_id`` for ``"bos"``
    and ``"pack"`` (the token as given); for ``"pack"`` also ``mark``, a known ``[rows before,
    epoch, block]`` at or before ``count``, so a resumed run packs from there instead of from
    the run's first block.
    """
    out: dict[str, Any] = {} if boundary is None else {"boundary": boundary.token}
    if isinstance(order, PackedRowIndex):
        return {"bos_id": order.index.bos_id, **out, "mark": list(order.mark(count))}
    if isinstance(order, DocStartSampler):
        return {"bos_id": order.index.bos_id, **out}
    return out


def check_source_state(
    name: str, order: Any, saved: dict[str, Any], count: int, boundary: Boundary | None = None,
) -> tuple[int, int, int] | None:
    """Check what a saved source entry adds (see :func:`source_state`) against ``order``; return its mark.

    A saved ``boundary`` is compared with the current one (``boundary``; ``None``: this loader
    splits no documents and ignores it), and then ``bos_id`` is not: the same token gives the
    same rows. An entry saved before the token was recorded compares ``bos_id`` as given.

    Raises:
        BoundaryMismatchError: the source's rows were split at another boundary token (both named).
        StateMismatchError: another ``bos_id`` (an older state), or a mark out of range.
    """
    want = order.index.bos_id if isinstance(order, (PackedRowIndex, DocStartSampler)) else None
    if "boundary" in saved:
        if boundary is not None and saved["boundary"] != boundary.token:
            raise boundary_mismatch(f"state['sources'][{name!r}]", saved["boundary"], boundary.token, boundary.describe())
    elif "bos_id" in saved and saved["bos_id"] != want:
        raise StateMismatchError(
            f"state['sources'][{name!r}] was saved with bos_id={saved['bos_id']!r} but this loader reads source "
            f"{name!r} with bos_id={want!r}: its rows would be other documents; use the same bos_id"
        )
    mark = saved.get("mark")
    if mark is None or not isinstance(order, PackedRowIndex):
        return None
    rows, epoch, block = mark
    if rows > count or block >= order.n_blocks:
        raise StateMismatchError(
            f"state['sources'][{name!r}]['mark'] is {mark}: out of range (rows before it at most {count}, "
            f"block below {order.n_blocks})"
        )
    return rows, epoch, block


def need_index(documents: str) -> bool:
    """Whether the sources need document indexes (every mode but ``"stream"``).

    Raises:
        ConfigError: an unknown mode.
    """
    if documents not in SOURCE_DOCUMENTS:
        raise ConfigError(f"documents must be one of {SOURCE_DOCUMENTS}, not {documents!r}")
    return documents != "stream"
