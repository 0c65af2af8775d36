"""A mixture says, per source and naming it, what a single-source loader warns of: rows that
skip the tails of long documents (``"bos"``, ``"pack"``), a boundary token assumed for
headerless shards, a ``"mask"`` source with no document start."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import streamtok

T, B = 32, 4


def _documents(path, doc_len, n, bos=1, seed=0):
    path.mkdir()
    tokens = np.random.default_rng(seed).integers(2, 500, n).astype(np.uint16)
    tokens[::doc_len] = bos
    np.save(path / "train.npy", tokens)
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixwarn")
    # long: documents of 3200 tokens (rows read 33 of each); short: of 20 (nothing skipped)
    return {"long": _documents(root / "long", 3200, 100_000), "short": _documents(root / "short", 20, 20_000, seed=1)}


def _messages(make):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make()
    return [str(w.message) for w in caught if str(w.message).startswith("streamtok")]


def _single(path, documents, **kw):
    return streamtok.loader(path, seq_len=T, batch_size=B, split="all", documents=documents, metrics=False, **kw)


def _mixture(dirs, documents, **kw):
    return streamtok.loader(
        dict(dirs), weights={"long": 0.5, "short": 0.5}, seq_len=T, batch_size=B, split="all", documents=documents,
        metrics=False, **kw,
    )


@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_each_source_that_skips_long_documents_says_so_by_name(dirs, documents):
    single = _messages(lambda: _single(dirs["long"], documents, bos_id=1))
    assert len(single) == 1 and "skips" in single[0]
    assert _messages(lambda: _single(dirs["short"], documents, bos_id=1)) == []
    mixed = _messages(lambda: _mixture(dirs, documents, bos_id=1))
    assert len(mixed) == 1, mixed  # the long source only
    assert "source 'long' (" in mixed[0]
    # the same figures as the source alone: documents, share skipped, tokens
    figures = lambda m: re.search(r"(\d+) of the (\d+) documents.*skips (.*) of its (\d+) tokens", m).groups()  # noqa: E731
    assert figures(mixed[0]) == figures(single[0])


def test_a_source_whose_boundary_token_is_assumed_says_so_by_name(dirs):
    """Headerless uint16 shards: 50256 assumed, as for one source, naming the source; the other
    source, whose token is given, says nothing."""
    with pytest.warns(UserWarning, match=r"streamtok: source 'short' \(.*\): the shards do not say which token"):
        ld = _mixture(dirs, "mask", bos_id={"long": 1})
    messages = _messages(lambda: _mixture(dirs, "mask", bos_id={"long": 1}))
    assert not any("source 'long'" in m for m in messages)
    assert ld.collator.index.parts[1].boundary.assumed


def test_a_mask_source_without_a_document_start_says_so_by_name(dirs):
    messages = _messages(lambda: _mixture(dirs, "mask", bos_id={"long": 1, "short": 999}))
    assert len(messages) == 1 and "found 0 document starts (bos_id=999) in source 'short'" in messages[0]
