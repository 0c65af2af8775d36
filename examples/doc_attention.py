"""Attention that stays inside documents, from the ``doc`` of a streamtok batch.

    for x, y, doc in streamtok.loader(..., documents="mask"):
        out = document_attention(q, k, v, doc)     # q, k, v: (B, heads, T, head_dim)

A token attends to the tokens before it in its own segment (its document, or the part of it
in this row): a block-diagonal causal mask. On CUDA with FlexAttention (torch >= 2.5) the mask
is a ``BlockMask`` built from the segment ids, so only the blocks on the diagonal are computed;
elsewhere (CPU) ``scaled_dot_product_attention`` gets a dense ``(B, 1, T, T)`` boolean mask,
which costs ``B*T*T`` bytes: fine for small ``T``, what FlexAttention avoids for long rows.
FlashAttention's varlen kernels take ``doc.cu_seqlens`` and ``doc.max_seqlen`` directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # FlexAttention: torch >= 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    create_block_mask = flex_attention = None


def segment_ids(doc) -> torch.Tensor:
    """``(B, T)`` int: which segment of its row each token is in (0, 1, 2, ... per row)."""
    return torch.cumsum(doc.position_ids == 0, dim=1) - 1


def block_causal_mask(doc) -> torch.Tensor:
    """``(B, 1, T, T)`` bool, True where query ``i`` may attend to key ``j``: same segment, ``j <= i``."""
    seg = segment_ids(doc)
    T = seg.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def flex_block_mask(doc, n_heads: int | None = None):
    """A FlexAttention ``BlockMask`` of the same rule (CUDA)."""
    seg = segment_ids(doc)
    B, T = seg.shape

    def same_document_causal(b, h, q, kv):
        return (seg[b, q] == seg[b, kv]) & (q >= kv)

    return create_block_mask(same_document_causal, B, None, T, T, device=seg.device)


def document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, doc) -> torch.Tensor:
    """Causal attention restricted to each token's segment; ``q, k, v``: ``(B, heads, T, d)``."""
    if q.is_cuda and flex_attention is not None:
        return flex_attention(q, k, v, block_mask=flex_block_mask(doc))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(doc))


def doc_to(doc, device: str | torch.device):
    """The batch's ``doc`` on ``device`` (its compact boundaries move; position ids follow)."""
    return type(doc)(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in doc)
