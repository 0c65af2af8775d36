"""The boundary token is never silently missing (issue 20, item 7).

Shards written by ``streamtok tokenize --tokenizer`` with a Hugging Face tokenizer (made here,
offline) record their boundary token in the tokenize manifest. A loader with
``documents="mask"`` and no ``bos_id`` takes it from there (it took the format's default before:
50256 for uint16 llm.c shards, 128000 for uint32 ones, and gave one segment per row), a
manifest that does not match its shards is refused, and no token known is a ``ConfigError``.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings

import numpy as np
import pytest

import streamtok
from streamtok import MemmapReader, ShardLister, cli
from streamtok._formats import write_shard
from streamtok.documents.boundary import boundary_token, resolve_boundary, tokenize_record
from streamtok.errors import ConfigError

pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'streamtok[hf]')")

T, B = 128, 8
WORDS = [f"w{i}" for i in range(300)]
# OLMo-2's <|endoftext|> is id 100257 of 100,278: uint32 shards whose llm.c magic is Llama 3's.
OLMO_LIKE = 100_257


def _tokenizer(directory, n_words: int) -> int:
    """A WordLevel ``tokenizer.json`` of ``n_words`` ids and a special ``<|endoftext|>`` after them."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(n_words - 1)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|endoftext|>"])
    directory.mkdir(parents=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return tok.token_to_id("<|endoftext|>")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 160))) for _ in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(docs) + "\n\n")
    return path


def _tokenize(corpus, tok_dir, out, *extra):
    args = ["tokenize", str(corpus), "--tokenizer", str(tok_dir / "tokenizer.json"), "--out", str(out),
            "--shard-tokens", "6000", "--no-progress", *extra]
    assert cli.main(args) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def made(corpus, tmp_path_factory):
    """``{kind: (shard dir, boundary id)}``: uint16 llm.c, uint32 llm.c (OLMo-like ids), headerless .npy."""
    root = tmp_path_factory.mktemp("made")
    small = _tokenizer(root / "tok_small", 400)
    big = _tokenizer(root / "tok_big", OLMO_LIKE)
    assert big == OLMO_LIKE and small == 400
    out = {
        "uint16": (_tokenize(corpus, root / "tok_small", root / "uint16"), root / "uint16"),
        "uint32": (_tokenize(corpus, root / "tok_big", root / "uint32"), root / "uint32"),
        "npy": (_tokenize(corpus, root / "tok_small", root / "npy", "--shard-format", "npy"), root / "npy"),
    }
    for manifest, _ in out.values():
        assert manifest["complete"] and manifest["splits"]["train"]["n_shards"] > 3
    return {kind: (path, manifest["eot_token"]) for kind, (manifest, path) in out.items()}


def _copy(made, kind, tmp_path):
    path, eot = made[kind]
    shutil.copytree(path, tmp_path / kind)
    return tmp_path / kind, eot


def _loader(path, **kw):
    return streamtok.loader(path, seq_len=T, batch_size=B, split="all", metrics=False, **{"documents": "mask", **kw})


def _segments_per_row(path, **kw):
    """Segments per row of every batch, and the truth: a row breaks at each boundary token after its first column."""
    got, truth = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning here would mean the token was guessed
        batches = list(_loader(path, **kw))
    for x, _, doc in batches:
        got.append((len(doc.cu_seqlens) - 1) / B)
        truth.append(((kw.get("bos_id") or _eot_of(path)) == x[:, 1:]).sum().item() / B + 1)
    return np.mean(got), np.mean(truth), batches


def _eot_of(path):
    return json.loads((path / "manifest.json").read_text())["eot_token"]


# -- the loader takes the manifest's token --------------------------------------------------


@pytest.mark.parametrize("kind", ["uint16", "uint32", "npy"])
def test_mask_without_bos_id_gives_the_true_segments_per_row(made, kind):
    """It gave 1.00 segment per row: the format's 50256 (uint16) or 128000 (uint32) never occurs."""
    path, eot = made[kind]
    got, truth, batches = _segments_per_row(path)
    assert got == pytest.approx(truth) and truth > 1.5
    for x, _, doc in batches:  # and each segment starts exactly at a boundary token
        starts = doc.position_ids.numpy() == 0
        assert starts[:, 0].all() and np.array_equal(starts[:, 1:], x.numpy()[:, 1:] == eot)
    index = _loader(path).collator.index
    assert index.boundary.token == eot and "tokenize manifest" in index.boundary.source
    assert index.n_documents == json.loads((path / "manifest.json").read_text())["n_docs"]


@pytest.mark.filterwarnings("ignore:streamtok. documents=.* reads the first seq_len")
@pytest.mark.parametrize("documents", ["bos", "pack"])
def test_bos_and_pack_rows_start_at_the_manifests_token(made, documents):
    """bos and pack refused these shards before ("no document starts"), with the format's token."""
    path, eot = made["uint32"]
    for x, _, doc in _loader(path, documents=documents):
        assert (x[:, 0] == eot).all()
        starts = doc.position_ids.numpy() == 0
        assert np.array_equal(starts[:, 1:], x.numpy()[:, 1:] == eot)


def test_bos_id_given_wins_over_the_manifest(made, tmp_path):
    path, eot = _copy(made, "uint16", tmp_path)
    other = 7  # a word id: rows now break at it, as asked
    got, truth, _ = _segments_per_row(path, bos_id=other)
    assert got == pytest.approx(truth) and _loader(path, bos_id=other).collator.index.boundary.describe() == "bos_id=7"
    # and it is how to read shards whose manifest no longer matches them
    _edit(path / "data_train_000001.bin", eot)
    assert _segments_per_row(path, bos_id=eot)[0] > 1.5


# -- a manifest is checked before it is believed ----------------------------------------------


def _edit(shard, value, at=-1):
    """Change one token of ``shard`` in place (same size)."""
    raw = bytearray(shard.read_bytes())
    dtype = np.uint32 if raw[:4] == np.array([20240801], "<i4").tobytes() else np.uint16
    size = np.dtype(dtype).itemsize
    at = len(raw) - size if at < 0 else at
    raw[at: at + size] = np.array([value], dtype=dtype).tobytes()
    shard.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["shard edited", "n_tokens", "sha256", "dtype", "eot_token", "another eot_token", "n_docs", "listed twice"])
def test_a_manifest_that_does_not_match_its_shards_is_refused(made, tmp_path, damage):
    path, eot = _copy(made, "uint16", tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    shard = manifest["shards"][1]
    if damage == "shard edited":
        _edit(path / shard["name"], 5)
    elif damage == "n_tokens":
        shard["n_tokens"] += 1
    elif damage == "sha256":
        shard["sha256"] = "0" * 64
    elif damage == "dtype":
        manifest["dtype"] = "uint32"
    elif damage == "eot_token":
        manifest["eot_token"] = manifest["n_vocab"]
    elif damage == "another eot_token":
        manifest["eot_token"] = 7  # a word's id: it occurs, but not once per listed document
    elif damage == "n_docs":
        shard["n_docs"] = -1
    else:
        manifest["shards"].append(dict(shard))
    if damage != "shard edited":
        (path / "manifest.json").write_text(json.dumps(manifest))
    for documents in ("mask", "bos"):
        with pytest.raises(ConfigError, match=r"manifest\.json: lists shard data_train_\d+\.bin but .*pass bos_id="):
            _loader(path, documents=documents)
    assert list(_loader(path, documents="stream"))  # no boundary needed: nothing asked of the manifest


def test_a_manifest_that_does_not_list_the_shards_says_nothing(made, tmp_path):
    """Renamed shards (or another tool's manifest.json): the format speaks, and says it found nothing."""
    path, eot = _copy(made, "uint16", tmp_path)
    for shard in sorted(path.glob("data_*.bin")):
        shard.rename(shard.with_name("renamed_" + shard.name))
    with pytest.warns(UserWarning, match=r"found 0 document starts \(bos_id=50256, from the llm.c header \(magic 20240520"):
        list(_loader(path))
    (path / "manifest.json").write_text('{"kind": "another tool", "files": []}')
    with pytest.raises(ConfigError, match=r"0 document starts.*\(bos_id=50256, from the llm.c header"):
        _loader(path, documents="bos")


# -- none known, guessed, or two at once --------------------------------------------------------


def test_no_token_known_is_a_config_error_naming_the_shards(tmp_path):
    for k in range(2):
        np.save(tmp_path / f"part_{k}.npy", np.arange(5000, dtype=np.int32))
    for documents in ("mask", "bos", "pack"):
        with pytest.raises(ConfigError, match=r"\[part_0.npy, part_1.npy\]: int32 tokens without an llm.c header.*Pass bos_id="):
            _loader(tmp_path, documents=documents)
    assert _loader(tmp_path, bos_id=7).collator.index.boundary.token == 7


def test_headerless_uint16_assumes_gpt2_and_says_so(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50000, 20_000).astype(np.uint16)
    tokens[::300] = 50256
    np.save(tmp_path / "train.npy", tokens)
    with pytest.warns(UserWarning, match=r"do not say which token starts a document; bos_id=50256, assumed .*Pass bos_id=50256"):
        loader = _loader(tmp_path)
    assert loader.collator.index.n_documents == len(range(0, 20_000, 300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _loader(tmp_path, bos_id=50256)  # said: no warning


def test_shards_that_disagree_are_refused(made, tmp_path):
    path, eot = made["uint16"]
    write_shard(tmp_path / "gpt2.bin", np.full(3000, 50256, dtype=np.uint16))
    shards = [str(p) for p in sorted(path.glob("data_*.bin"))] + [str(tmp_path / "gpt2.bin")]
    with pytest.raises(ConfigError, match=rf"disagree.*has {eot} \(the tokenize manifest .*has 50256 \(the llm.c header"):
        _loader(shards)


# -- the function a mixture asks of each source, and the tools -----------------------------------


def test_boundary_token_of_each_source_of_a_mixture(made, tmp_path):
    from _util import docs_of, write_megatron

    write_shard(tmp_path / "l3.bin", np.arange(10, dtype=np.uint32))
    write_megatron(tmp_path / "m_text_document", docs_of(np.random.default_rng(0), 5))
    sources = {
        "olmo": ShardLister(made["uint32"][0]), "small": made["uint16"][0], "npy": made["npy"][0],
        "llama3": [str(tmp_path / "l3.bin")], "megatron": [str(tmp_path / "m_text_document.bin")],
    }
    want = {"olmo": OLMO_LIKE, "small": 400, "npy": 400, "llama3": 128000, "megatron": None}
    for name, source in sources.items():
        lister = source if isinstance(source, ShardLister) else ShardLister(source)
        assert boundary_token(lister) == want[name], name
        assert boundary_token(MemmapReader(lister)) == want[name], name
        assert boundary_token(lister, bos_id=3) == 3
    with pytest.raises(ConfigError, match="bos_id must be a non-negative token id"):
        resolve_boundary(MemmapReader(ShardLister(made["uint16"][0])).infos, -1)


def test_inspect_counts_the_documents_the_loader_finds(made, tmp_path, capsys):
    path, eot = made["uint32"]
    capsys.readouterr()
    assert cli.main(["inspect", str(path), "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    index = _loader(path).collator.index
    per_shard = np.diff(index.doc_offsets).tolist()  # document starts; inspect also counts one begun before
    assert [r["n_docs"] for r in reports] == per_shard  # the boundary tokens inspect counts
    assert [r["documents"]["n_documents"] - (r["head_tokens"][0] != eot) for r in reports] == per_shard
    assert {r["vocab_source"] for r in reports} == {"the tokenize manifest (a Hugging Face tokenizer)"}
    # a manifest that no longer matches: the loader refuses it, and inspect says why
    copy, _ = _copy(made, "uint32", tmp_path)
    _edit(copy / "data_train_000002.bin", 5)
    assert cli.main(["inspect", str(copy / "data_train_000002.bin"), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert "lists shard data_train_000002.bin but says sha256" in report["error"]
    rec = tokenize_record(MemmapReader(ShardLister(copy / "data_train_000001.bin")).infos[0])
    assert rec is not None and rec.boundary == eot and rec.tokenizer["boundary_token"] == "<|endoftext|>"


def test_locate_text_decodes_with_the_manifests_tokenizer(made, tmp_path, capsys):
    from tokenizers import Tokenizer

    path, eot = made["uint16"]
    loader = _loader(path, seed=3, mode="shuffle")
    (tmp_path / "state.json").write_text(json.dumps(loader.state_dict()))
    capsys.readouterr()
    assert cli.main(["locate", str(tmp_path / "state.json"), "--step", "1", "--text", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    x = [b for i, b in zip(range(2), _loader(path, seed=3, mode="shuffle"))][1][0].numpy()
    tok = Tokenizer.from_file(str(path.parent / "tok_small" / "tokenizer.json"))
    reader = MemmapReader(ShardLister(path).split("all"))
    tokens = np.asarray(reader[0: reader.n_tokens])
    assert len(rows) == B
    for row, xs in zip(rows, x):
        assert row["text"] == tok.decode(xs.tolist() + [int(tokens[_at(reader, row) + T])], skip_special_tokens=False)
        at = _at(reader, row)
        assert np.array_equal(tokens[at: at + T], xs)
        # the document numbered by the manifest's token: boundary tokens up to the row's start, less one
        assert row["document"] == int((tokens[: at + 1] == eot).sum()) - 1


def _at(reader, row):
    return int(reader.offsets[list(reader.paths).index(row["shard"])]) + row["offset"]


@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
def test_a_documents_mixture_resolves_each_sources_own_boundary(made, tmp_path, documents):
    """No bos_id: each source's token from its own data (here a tokenize manifest: 400; llm.c
    headers: 50256); the joint index does not ask the joint reader, whose sources disagree."""
    from _util import BOS, make_doc_shards

    (tmp_path / "gpt2").mkdir()
    make_doc_shards(tmp_path / "gpt2", n_shards=2, docs=80)
    want = {"small": made["uint16"][1], "gpt2": BOS}
    assert want["small"] == 400 and BOS == 50256
    ld = streamtok.loader(
        {"small": made["uint16"][0], "gpt2": tmp_path / "gpt2"}, weights={"small": 0.5, "gpt2": 0.5},
        seq_len=T, batch_size=B, split="all", documents=documents, epochs=None, metrics=False,
    )
    mixture = ld.collator.source
    if documents != "mask":  # bos/pack: each source's units come from its own index
        assert [o.index.boundary.token for o in mixture.samplers] == [400, BOS]
    assert {p.boundary.token for p in ld.collator.index.parts} == {400, BOS}
    seen = set()
    for step, (x, y, doc) in zip(range(6), ld):
        starts = set(doc.cu_seqlens[:-1].tolist())
        for r, origin in enumerate(ld.locate(step)):
            token = want[origin.source]
            seen.add(origin.source)
            row = x[r].tolist()
            if documents != "mask":
                assert row[0] == token, (origin.source, row[0])
            for c in range(1, T):
                assert (r * T + c in starts) == (row[c] == token), (origin.source, r, c)
    assert seen == {"small", "gpt2"}
