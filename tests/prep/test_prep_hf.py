"""Hugging Face tokenizers and Hub datasets as tokenize inputs, offline, on the shipped plays."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from _util import ROOT
from prep_helpers import dir_bytes, make_hub_files, offline_hub, output_bytes, run_cli, train_tokenizer

from streamtok import MemmapReader, ShardLister
from streamtok._formats import MAGIC_GPT2, MAGIC_LLAMA3, probe_shard
from streamtok.errors import ConfigError, EncodingUnavailableError
from streamtok.prep.tokenize import TokenizeConfig, tokenize_files

tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'streamtok[hf]')")

PLAYS = ROOT / "data" / "shakespeare"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return train_tokenizer(root / "small", big=False), train_tokenizer(root / "big", big=True)


@pytest.fixture(scope="module")
def plays(tmp_path_factory):
    # Two plays, plus a document that spells both boundary tokens as text.
    root = tmp_path_factory.mktemp("plays")
    text = "".join((PLAYS / name).read_text() for name in ("hamlet.txt", "julius_caesar.txt"))
    path = root / "plays.txt"
    path.write_text(text + "\n\nthis text says <|begin_of_text|> and <|endoftext|>, and is not a boundary\n")
    return path


def _expected(tok_dir: Path, path: Path, boundary: str) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    tok.encode_special_tokens = True
    docs = [d for d in path.read_text().split("\n\n") if d and not d.isspace()]
    ids = []
    for doc in docs:
        ids.append(tok.token_to_id(boundary))
        ids.extend(tok.encode(doc, add_special_tokens=False).ids)
    return np.array(ids, dtype=np.int64)


def _concat(directory) -> np.ndarray:
    reader = MemmapReader(ShardLister(directory).split("all"))
    return np.concatenate([np.asarray(reader.shard_array(k), dtype=np.int64) for k in range(len(reader.infos))])


def _tok(inputs, out, tokenizer, workers=1, **kw):
    cfg = TokenizeConfig(tokenizer=str(tokenizer), shard_tokens=60_000, **kw)
    return tokenize_files([str(p) for p in inputs], str(out), config=cfg, workers=workers, progress=False)


@pytest.mark.parametrize("big", [False, True])
def test_trained_tokenizer_writes_its_ids_with_its_boundary(trained, plays, tmp_path, capsys, big):
    tok_dir = trained[big]
    boundary = "<|begin_of_text|>" if big else "<|endoftext|>"
    m = _tok([plays], tmp_path / "out", tok_dir / "tokenizer.json", workers=2)
    want = _expected(tok_dir, plays, boundary)
    got = _concat(tmp_path / "out")
    np.testing.assert_array_equal(got, want)
    info = probe_shard(tmp_path / "out" / "data_train_000000.bin")
    magic = int(np.fromfile(info.path, dtype="<i4", count=1)[0])
    if big:
        assert m["n_vocab"] > 65536 and m["eot_token"] > 65535
        assert (info.dtype, info.version, magic) == (np.dtype("uint32"), 7, MAGIC_LLAMA3)
        assert got.max() == m["eot_token"] > 65535
    else:
        assert (info.dtype, magic) == (np.dtype("uint16"), MAGIC_GPT2)
    assert m["tokenizer"]["boundary_token"] == boundary and m["encoding"] is None
    assert m["tokenizer"]["sha256"] and np.count_nonzero(got == m["eot_token"]) == m["n_docs"]  # spelled boundaries stay text
    # inspect takes the vocabulary and boundary from the manifest beside the shards
    capsys.readouterr()
    assert run_cli(["inspect", str(tmp_path / "out"), "--check", "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["vocab_size"] for r in reports} == {m["n_vocab"]} and {r["head_text"] for r in reports} == {None}
    assert sum(r["n_docs"] for r in reports) == m["n_docs"]
    # each shard's document index starts documents at the tokenizer's boundary, as the manifest says
    output_bytes(tmp_path / "out")
    assert len(reports) > 1 and all(
        r["documents"]["n_documents"] == r["n_docs"] + (r["head_tokens"][0] != m["eot_token"]) for r in reports
    )  # the index counts a document begun in the shard before


def test_tokenizer_from_the_hub_cache_and_its_directory(trained, plays, tmp_path, monkeypatch):
    tok_dir = trained[False]
    files = {name: (tok_dir / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}
    offline_hub(monkeypatch, make_hub_files(tmp_path / "hub", "someone/tiny-bpe", files, repo_type="model"))
    by_dir = _tok([plays], tmp_path / "by_dir", tok_dir)
    assert by_dir["tokenizer"]["source"] == str(tok_dir / "tokenizer.json")
    assert _tok([plays], tmp_path / "by_dir", tok_dir / "tokenizer.json")["complete"]  # the same tokenizer: done
    m = _tok([plays], tmp_path / "by_repo", "someone/tiny-bpe")
    assert m["tokenizer"]["source"] == "someone/tiny-bpe"
    np.testing.assert_array_equal(_concat(tmp_path / "by_repo"), _concat(tmp_path / "by_dir"))
    with pytest.raises(EncodingUnavailableError, match="no tokenizer.json of a Hub repo of that name"):
        _tok([plays], tmp_path / "x", "someone/absent")
    with pytest.raises(EncodingUnavailableError, match="no such tokenizer.json"):
        _tok([plays], tmp_path / "y", tmp_path / "nope" / "tokenizer.json")


def test_tokenizer_without_a_boundary_is_refused(trained, plays, tmp_path):
    from tokenizers import Tokenizer, models

    bare = tmp_path / "bare"
    bare.mkdir()
    Tokenizer(models.BPE()).save(str(bare / "tokenizer.json"))
    with pytest.raises(ConfigError, match="no BOS or EOS token"):
        _tok([plays], tmp_path / "o", bare / "tokenizer.json")


def test_hub_dataset_input_streams_parquet_from_the_cache(tmp_path, monkeypatch, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from prep_helpers import expected_tokens, make_docs

    docs = make_docs(300, seed=50)
    files, parts = {}, [docs[:120], docs[120:]]
    for k, part in enumerate(parts):
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": part, "id": list(range(len(part)))}), buf, row_group_size=50)
        files[f"data/train-{k:05d}-of-00002.parquet"] = buf.getvalue()
    files["README.md"] = b"# a dataset"
    offline_hub(monkeypatch, make_hub_files(tmp_path / "hub", "someone/tiny-corpus", files))
    out = tmp_path / "out"
    argv = ["tokenize", "hf://datasets/someone/tiny-corpus/data/*.parquet", "--field", "text", "--out", str(out), "--no-progress"]
    assert run_cli(argv) == 0
    np.testing.assert_array_equal(_concat(out), expected_tokens(docs))
    m = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in m["sources"]] == [
        f"hf://datasets/someone/tiny-corpus@0123456789abcdef0123456789abcdef01234567/data/train-{k:05d}-of-00002.parquet" for k in range(2)
    ]
    assert m["n_bytes"] == sum(len(v) for k, v in files.items() if k.endswith(".parquet"))
    assert run_cli(["tokenize", "hf://datasets/someone/tiny-corpus", "--out", str(tmp_path / "default"), "--no-progress"]) == 0
    assert dir_bytes(tmp_path / "default") == dir_bytes(out)  # default: the repo's parquet files
    assert run_cli(["tokenize", "hf://datasets/someone/absent", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "not in the Hugging Face cache" in capsys.readouterr().err
    assert run_cli(["tokenize", "hf://datasets/bad", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "write hf://datasets/OWNER/NAME" in capsys.readouterr().err
