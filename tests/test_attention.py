"""streamtok.attention: FlexAttention's mask, flash-attn's varlen arguments and the dense mask,
each checked against a reference built token by token from the document starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamtok import attention
from streamtok.documents.index import documents_from_starts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 24
# Per row, the columns where a document starts (a row start is always a segment start).
STARTS = [[3, 10], [], [1, 2, 23]]


def doc_of(rows_starts, seq_len=T):
    rows = np.array([r for r, cols in enumerate(rows_starts) for _ in cols], dtype=np.int64)
    cols = np.array([c for cols in rows_starts for c in cols], dtype=np.int64)
    return documents_from_starts(rows, cols, len(rows_starts), seq_len)


def reference_mask(rows_starts, seq_len=T):
    """(B, T, T) bool, one token pair at a time: key j is visible to query i when j <= i and no
    document starts in (j, i]."""
    out = torch.zeros(len(rows_starts), seq_len, seq_len, dtype=torch.bool)
    for b, starts in enumerate(rows_starts):
        for i in range(seq_len):
            for j in range(i + 1):
                out[b, i, j] = not any(j < s <= i for s in starts)
    return out


def test_dense_mask_and_segment_ids_match_the_reference():
    doc = doc_of(STARTS)
    mask = attention.block_causal_mask(doc)
    assert mask.shape == (3, 1, T, T) and mask.dtype == torch.bool
    assert torch.equal(mask[:, 0], reference_mask(STARTS))
    seg = attention.segment_ids(doc)
    assert seg[0].tolist() == [0] * 3 + [1] * 7 + [2] * 14 and seg[1].tolist() == [3] * T
    assert seg[2].tolist() == [4, 5] + [6] * 21 + [7]


def test_flex_mask_mod_and_block_mask_match_the_reference():
    from torch.nn.attention.flex_attention import create_mask, flex_attention

    doc = doc_of(STARTS)
    dense = create_mask(attention.document_mask_mod(doc), 3, 1, T, T, device="cpu")
    assert torch.equal(dense[:, 0], reference_mask(STARTS))
    block_mask = attention.flex_block_mask(doc)
    assert block_mask.shape == (3, 1, T, T)
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, T, 8) for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlexAttention runs unfused (eager) on CPU, and says so
        out = flex_attention(q, k, v, block_mask=block_mask)
        via = attention.document_attention(q, k, v, doc, flex=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=reference_mask(STARTS)[:, None])
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(via, ref, atol=1e-5)


def test_varlen_args_are_flash_attns_contract():
    """Causal attention per sequence of cu_seqlens over the flattened tokens (what
    flash_attn_varlen_func computes) equals attention under the reference mask."""
    doc = doc_of(STARTS)
    args = attention.varlen_args(doc)
    cu = args["cu_seqlens_q"]
    assert cu.dtype == torch.int32 and args["cu_seqlens_k"] is cu and cu[0] == 0 and cu[-1] == 3 * T
    lengths = (cu[1:] - cu[:-1]).tolist()
    assert args["max_seqlen_q"] == args["max_seqlen_k"] == max(lengths) == T
    torch.manual_seed(1)
    heads, d = 2, 8
    q, k, v = (torch.randn(3 * T, heads, d) for _ in range(3))  # flash-attn's (total, heads, d)
    out = torch.empty_like(q)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        seq = [t[a:b].transpose(0, 1) for t in (q, k, v)]
        out[a:b] = F.scaled_dot_product_attention(*seq, is_causal=True).transpose(0, 1)
    as_batch = [t.view(3, T, heads, d).transpose(1, 2) for t in (q, k, v)]
    ref = attention.document_attention(*as_batch, doc, flex=False)
    assert torch.allclose(out.view(3, T, heads, d).transpose(1, 2), ref, atol=1e-5)


def test_loader_docs_in_every_documents_mode(tmp_path):
    from _util import make_doc_shards

    import streamtok

    make_doc_shards(tmp_path, n_shards=2, docs=40, median=10)
    for mode in ("mask", "bos", "pack"):
        x, _, doc = next(iter(streamtok.loader(tmp_path, seq_len=32, batch_size=4, documents=mode, metrics=False)))
        pos = doc.position_ids
        starts = [[c for c in range(1, 32) if pos[r, c] == 0] for r in range(4)]
        assert torch.equal(attention.block_causal_mask(doc)[:, 0], reference_mask(starts, 32)), mode


def test_importing_it_does_not_import_torch():
    code = "import sys, streamtok, streamtok.attention; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_readme_snippet_runs(tmp_path, monkeypatch):
    """The README's documents snippet, as written, on a data/shards of documents."""
    from _util import make_doc_shards

    text = open(os.path.join(ROOT, "README.md")).read()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "streamtok.attention" in b]
    (tmp_path / "data" / "shards").mkdir(parents=True)
    make_doc_shards(tmp_path / "data" / "shards", n_shards=2, docs=80, median=15)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREAMTOK_METRICS", "0")
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["out"].shape == (4, 2, 256, 32) and scope["dense"].shape == (4, 1, 256, 256)
    assert scope["varlen"]["cu_seqlens_q"][-1] == 4 * 256


@pytest.mark.slow
def test_the_example_runs(tmp_path):
    from _util import make_doc_shards

    make_doc_shards(tmp_path, n_shards=2, docs=80, median=15)
    out = subprocess.run([sys.executable, "-W", "ignore", os.path.join(ROOT, "examples", "doc_attention.py"), "--data",
                          str(tmp_path), "--seq-len", "64"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "STREAMTOK_METRICS": "0"})
    assert out.returncode == 0, out.stderr
    assert re.search(r"FlexAttention: max \|diff\| \d\.\de-0[5-9]|FlexAttention: max \|diff\| 0\.0e\+00", out.stdout), out.stdout
