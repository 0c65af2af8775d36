"""Attention that stays inside documents: the three kernels, fed from a batch's ``doc``.

    python examples/doc_attention.py --data data/shards

The helpers live in the package (:mod:`streamtok.attention`); ``train_gpt.py --documents``
uses them. Per batch of ``streamtok.loader(..., documents="mask" | "bos" | "pack")``:

- FlexAttention: ``flex_attention(q, k, v, block_mask=flex_block_mask(doc))``;
- FlashAttention varlen: ``flash_attn_varlen_func(q, k, v, **varlen_args(doc), causal=True)``
  on the flattened ``(B*T, heads, head_dim)`` tokens;
- SDPA: ``scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(doc))``.

This script runs one batch through all three that this machine has, and prints how far each
is from the dense reference.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import streamtok
from streamtok.attention import block_causal_mask, doc_to, document_attention, flex_block_mask, varlen_args

__all__ = ["block_causal_mask", "doc_to", "document_attention", "flex_block_mask", "varlen_args"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/shards")
    p.add_argument("--documents", default="mask", choices=["mask", "bos", "pack"])
    p.add_argument("--seq-len", type=int, default=256)
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loader = streamtok.loader(args.data, seq_len=args.seq_len, batch_size=2, documents=args.documents, metrics=False)
    x, _, doc = next(iter(loader))
    doc = doc_to(doc, device)
    B, T, heads, d = *x.shape, 2, 16
    q, k, v = (torch.randn(B, heads, T, d, device=device) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(doc))
    print(f"{doc}: dense mask {tuple(block_causal_mask(doc).shape)}")
    print(f"document_attention: max |diff| {(document_attention(q, k, v, doc) - ref).abs().max().item():.1e}")
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        print("FlexAttention: not in this torch")
    else:
        out = flex_attention(q, k, v, block_mask=flex_block_mask(doc))
        print(f"FlexAttention: max |diff| {(out - ref).abs().max().item():.1e}")
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        print(f"flash-attn: not installed; its arguments would be {varlen_args(doc)}")
    else:
        flat = [t.transpose(1, 2).reshape(B * T, heads, d).to(torch.bfloat16) for t in (q, k, v)]
        out = flash_attn_varlen_func(*flat, **varlen_args(doc), causal=True).view(B, T, heads, d).transpose(1, 2)
        print(f"flash-attn varlen: max |diff| {(out.float() - ref).abs().max().item():.1e} (bf16)")


if __name__ == "__main__":
    main()
