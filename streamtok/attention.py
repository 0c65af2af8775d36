"""Attention that stays inside documents, from the ``doc`` of a streamtok batch.

    from .attention import document_attention, flex_block_mask, varlen_args

    for x, y, doc in streamtok.loader(..., documents="mask"):
        out = document_attention(q, k, v, doc)     # q, k, v: (B, heads, T, head_dim)

A token attends to the tokens before it in its own segment (its document, or the part of it in
this row): a block-diagonal causal mask. The three kernels people use take it in three forms,
all made here from the batch's compact boundaries (``doc.cu_seqlens``, ``n+1`` int32):

- **FlexAttention** (torch >= 2.5): :func:`flex_block_mask` builds a ``BlockMask`` from the
  segment ids, so only blocks that touch the diagonal are computed; ``O(B*T)`` memory for the
  segment ids plus ``O(B*(T/128)^2)`` for the block table.
- **FlashAttention varlen** (``flash_attn_varlen_func``): :func:`varlen_args` gives
  ``cu_seqlens_q/k`` and ``max_seqlen_q/k`` for the flattened ``(B*T, heads, d)`` tokens; no
  mask at all.
- **SDPA** with a dense mask: :func:`block_causal_mask`, ``(B, 1, T, T)`` bool, ``B*T*T`` bytes:
  fine for small ``T`` and the reference the other two are tested against.

:func:`document_attention` picks FlexAttention on CUDA and the dense mask elsewhere. torch is
imported by the functions, not by this module, so ``import streamtok`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch


class DocLike(Protocol):
    """What these functions read from a batch's ``doc`` (:class:`streamtok.Documents`)."""

    @property
    def cu_seqlens(self) -> torch.Tensor: ...

    @property
    def max_seqlen(self) -> int: ...

    @property
    def position_ids(self) -> torch.Tensor: ...


def segment_ids(doc: DocLike) -> torch.Tensor:
    """Which segment each token is in: ``(B, T)`` int32, numbered over the whole batch.

    Two tokens of a row may attend to each other only when their ids are equal. Made from
    ``cu_seqlens`` alone (one ``repeat_interleave``, no host sync), on its device.

    Args:
        doc: the batch's ``doc``.
    """
    import torch

    cu = doc.cu_seqlens.to(torch.int64)
    batch, seq_len = _shape(doc)
    n_segments = cu.numel() - 1
    ids = torch.arange(n_segments, device=cu.device, dtype=torch.int32)
    return torch.repeat_interleave(ids, cu[1:] - cu[:-1], output_size=batch * seq_len).view(batch, seq_len)


def block_causal_mask(doc: DocLike) -> torch.Tensor:
    """The dense mask for ``scaled_dot_product_attention``: ``(B, 1, T, T)`` bool.

    True where query ``i`` may attend to key ``j``: the same segment and ``j <= i``.

    Args:
        doc: the batch's ``doc``.
    """
    import torch

    seg = segment_ids(doc)
    T = seg.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def document_mask_mod(doc: DocLike) -> Any:
    """FlexAttention's ``mask_mod(b, h, q, kv)`` for the batch: same segment and ``kv <= q``.

    Args:
        doc: the batch's ``doc``.
    """
    seg = segment_ids(doc)

    def same_document_causal(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (seg[b, q] == seg[b, kv]) & (q >= kv)

    return same_document_causal


def flex_block_mask(doc: DocLike, *, block_size: int = 128) -> Any:
    """A FlexAttention ``BlockMask`` of the same rule, on ``doc``'s device, for any head count.

    Args:
        doc: the batch's ``doc``.
        block_size: FlexAttention's tile (128 by default); T need not be a multiple of it.

    Raises:
        ImportError: this torch has no FlexAttention (it needs torch >= 2.5).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    seg = segment_ids(doc)
    B, T = seg.shape
    return create_block_mask(document_mask_mod(doc), B, None, T, T, device=seg.device, BLOCK_SIZE=block_size)


def varlen_args(doc: DocLike) -> dict[str, Any]:
    """FlashAttention's varlen arguments for the batch's flattened ``(B*T, heads, d)`` tokens.

    ``flash_attn_varlen_func(q, k, v, **varlen_args(doc), causal=True)``: each segment is one
    sequence, so causal attention inside it is exactly the block-diagonal rule.

    Args:
        doc: the batch's ``doc``.

    Returns:
        ``{"cu_seqlens_q", "cu_seqlens_k"}`` (int32, on ``doc``'s device, ``0 .. B*T``) and
        ``{"max_seqlen_q", "max_seqlen_k"}`` (int).
    """
    import torch

    cu = doc.cu_seqlens.to(torch.int32)
    return {"cu_seqlens_q": cu, "cu_seqlens_k": cu, "max_seqlen_q": int(doc.max_seqlen), "max_seqlen_k": int(doc.max_seqlen)}


def document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, doc: DocLike, *, flex: bool | None = None) -> torch.Tensor:
    """Causal attention restricted to each token's segment.

    Args:
        q, k, v: ``(B, heads, T, head_dim)``.
        doc: the batch's ``doc``, on ``q``'s device.
        flex: use FlexAttention (``None``: when ``q`` is on CUDA and torch has it); otherwise
            ``scaled_dot_product_attention`` with :func:`block_causal_mask`.
    """
    import torch.nn.functional as F

    if flex is None:
        flex = q.is_cuda and _has_flex()
    if flex:
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v, block_mask=flex_block_mask(doc))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(doc))


def doc_to(doc: Any, device: Any) -> Any:
    """The batch's ``doc`` on ``device``: its compact boundaries move, ``position_ids`` follow on use.

    Args:
        doc: the batch's ``doc``.
        device: a ``torch.device`` or its name.
    """
    import torch

    return type(doc)(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in doc)


def _has_flex() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover - torch < 2.5
        return False
    return True


def _shape(doc: Any) -> tuple[int, int]:
    # streamtok's Documents is the tuple (cu_seqlens, max_seqlen, batch_size, seq_len); another
    # object that quacks like a doc gives its shape through position_ids.
    if isinstance(doc, tuple) and len(doc) == 4 and isinstance(doc[2], int) and isinstance(doc[3], int):
        return doc[2], doc[3]
    batch, seq_len = doc.position_ids.shape
    return int(batch), int(seq_len)
