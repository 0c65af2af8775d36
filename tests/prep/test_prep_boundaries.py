"""Document boundaries that text can forge are refused (issue 19, item 6)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from _util import ROOT

from streamtok.errors import ConfigError, InputFormatError
from streamtok.prep import hf_tokenizer
from streamtok.prep.tokenize import TokenizeConfig, tokenize_files
from streamtok.prep.units import Piece

tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'streamtok[hf]')")

PLAYS = ROOT / "data" / "shakespeare"


def _tokenizer(out: Path, bos: str | None, *, plain: list[str] = ()) -> Path:
    """A small BPE tokenizer; ``bos=None``: its longest all-letter vocabulary entry (a word)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train([str(sorted(PLAYS.glob("*.txt"))[0])], trainer)
    if plain:
        tok.add_tokens(list(plain))  # vocabulary entries, not special tokens
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    if bos is None:
        bos = max((w for w in tok.get_vocab() if w.isalpha()), key=len)
    (out / "tokenizer_config.json").write_text(json.dumps({"bos_token": bos}))
    return out


def _run(tmp_path, tok_dir, text):
    src = tmp_path / "in.txt"
    src.write_text(text)
    cfg = TokenizeConfig(tokenizer=str(tok_dir), shard_tokens=50_000)
    return tokenize_files([str(src)], str(tmp_path / "out"), config=cfg, workers=1, progress=False)


TEXT = "first document, the end\n\nsecond one spells <s> and the word the\n\nthird\n"


def test_an_ordinary_word_as_bos_token_is_refused(tmp_path):
    tok_dir = _tokenizer(tmp_path / "tok", None)
    word = json.loads((tok_dir / "tokenizer_config.json").read_text())["bos_token"]
    with pytest.raises(ConfigError, match=rf"boundary '{word}' .* is an ordinary vocabulary entry, not a special token"):
        _run(tmp_path, tok_dir, TEXT + f"\n\n{word} {word}{word}\n")


def test_a_plain_vocabulary_s_token_is_refused(tmp_path):
    tok_dir = _tokenizer(tmp_path / "tok", "<s>", plain=["<s>"])
    with pytest.raises(ConfigError, match=r"boundary '<s>' .* added token not marked special"):
        _run(tmp_path, tok_dir, TEXT)


def test_boundary_ids_are_counted_against_documents_in_every_chunk(tmp_path, monkeypatch):
    tok_dir = _tokenizer(tmp_path / "tok", "<s>", plain=["<s>"])
    monkeypatch.setattr(hf_tokenizer, "check_boundary", lambda *a: None)  # the first line of defence off
    with pytest.raises(InputFormatError, match=r"in\.txt \(the chunk from line 1\): (\d+) documents but (\d+) boundary") as err:
        _run(tmp_path, tok_dir, TEXT)
    docs, found = map(int, re.search(r"(\d+) documents but (\d+)", str(err.value)).groups())
    assert found == docs + 1  # the one `<s>` spelled in the text
    assert not json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"]


def test_a_special_boundary_that_text_spells_stays_text(tmp_path):
    tok_dir = _tokenizer(tmp_path / "tok", "<|endoftext|>")
    m = _run(tmp_path, tok_dir, TEXT.replace("<s>", "<|endoftext|>"))
    assert m["n_docs"] == m["splits"]["train"]["n_docs"] >= 2


def test_a_forged_piece_is_named():
    from streamtok.prep.tokenize import _checked_boundaries

    piece = Piece(0, 0, 10, np.array([7, 1, 7, 2, 7], dtype=np.uint16), 2, 5, 10, 3)
    with pytest.raises(InputFormatError, match=r"a\.txt \(the chunk from line 3\): 2 documents but 3 boundary tokens \(id 7\)"):
        list(_checked_boundaries([piece], 7, ["a.txt"]))
