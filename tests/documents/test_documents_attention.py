"""The model side of documents: masks from ``doc``, no attention leak, and train_gpt --documents."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _util import ROOT, make_doc_shards

EXAMPLES = os.path.join(str(ROOT), "examples")
sys.path.insert(0, EXAMPLES)

import train_gpt  # noqa: E402

from streamtok import attention as doc_attention  # noqa: E402

T = 24


def doc_of(rows_starts):
    """A ``doc`` for rows whose documents start at the given columns."""
    from streamtok.documents.index import documents_from_starts

    rows = np.array([r for r, cols in enumerate(rows_starts) for _ in cols], dtype=np.int64)
    cols = np.array([c for cols in rows_starts for c in cols], dtype=np.int64)
    return documents_from_starts(rows, cols, len(rows_starts), T)


def test_block_causal_mask_table():
    doc = doc_of([[3], []])
    mask = doc_attention.block_causal_mask(doc)[:, 0]
    assert mask.shape == (2, T, T)
    assert mask[0, 2, 0] and not mask[0, 3, 2] and mask[0, 5, 3] and not mask[0, 3, 4]
    assert torch.equal(mask[1], torch.ones(T, T, dtype=torch.bool).tril())
    assert doc.position_ids[0].tolist() == [0, 1, 2] + list(range(T - 3))


def test_a_tokens_loss_does_not_see_an_earlier_document():
    torch.manual_seed(0)
    model = train_gpt.GPT(train_gpt.GPTConfig(vocab_size=97, seq_len=T, n_layer=2, n_head=2, n_embd=32)).eval()
    split = 9  # document A is columns [0, 9), document B the rest
    doc = doc_of([[split]])
    x = torch.randint(0, 97, (1, T))
    y = torch.randint(0, 97, (1, T))
    other = x.clone()
    other[0, :split] = torch.randint(0, 97, (split,))  # replace document A

    def token_loss(idx, col, d):
        targets = torch.full_like(y, -100)
        targets[0, col] = y[0, col]
        with torch.no_grad():
            return model(idx, targets, d).item()

    for col in (split, split + 4, T - 1):
        assert token_loss(x, col, doc) == pytest.approx(token_loss(other, col, doc), abs=1e-6)
        assert token_loss(x, col, None) != pytest.approx(token_loss(other, col, None), abs=1e-6)  # plain causal leaks


@pytest.mark.slow
def test_train_gpt_trains_with_document_masks(tmp_path):
    data = tmp_path / "docs"
    data.mkdir()
    make_doc_shards(data, n_shards=3, docs=80, median=15)
    out = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "train_gpt.py"), "--data", str(data), "--out", str(tmp_path / "run"),
         "--documents", "mask", "--steps", "6", "--batch-size", "4", "--seq-len", "32", "--n-layer", "1",
         "--n-embd", "32", "--n-head", "2", "--num-workers", "0", "--eval-every", "6", "--eval-batches", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(np.isfinite(r["loss"]) for r in records) and "val_loss" in records[-1]
