"""Shared helpers of the tests of ``streamtok.prep``: tiny corpora, expected tokens, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from streamtok import cli
from streamtok._formats import probe_shard, write_shard
from streamtok.prep.encoding import load_encoding

PREP_COMMANDS = ("streamtok.prep.tokenize_cli", "streamtok.prep.hub", "streamtok.prep.inspect")
WORDS = "the quick brown fox jumps over a lazy dog . , ! café naïve 日本語 emoji 🙂 <|endoftext|> 42 1999".split()
# Runs one prep subcommand in a fresh interpreter (streamtok.bench.cli may not exist yet).
CLI_SNIPPET = (
    "import sys; from unittest import mock; from streamtok import cli; "
    f"mock.patch.object(cli, 'SUBCOMMANDS', {PREP_COMMANDS!r}).start(); sys.exit(cli.main(sys.argv[1:]))"
)


def make_docs(n_docs: int, seed: int = 0, max_words: int = 60) -> list[str]:
    """``n_docs`` random documents of words, some with single newlines inside."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, max_words))]
        if len(words) > 4 and rng.random() < 0.3:
            words[rng.randrange(1, len(words) - 1)] += "\n"
        docs.append(" ".join(words))
    return docs


def write_txt(path: Path, docs: list[str], sep: str = "\n\n") -> Path:
    path.write_text(sep.join(docs) + sep, encoding="utf-8")
    return path


def expected_tokens(docs: list[str], encoding: str = "gpt2") -> np.ndarray:
    """The stream tokenize must write: ``eot`` then the ordinary encoding, per document."""
    enc = load_encoding(encoding)
    out: list[int] = []
    for doc in docs:
        out.append(enc.eot_token)
        out.extend(enc.encode_ordinary(doc))
    return np.array(out, dtype=np.int64)


def run_cli(argv: list[str]) -> int:
    """``streamtok.cli.main`` restricted to the prep subcommands."""
    with mock.patch.object(cli, "SUBCOMMANDS", PREP_COMMANDS):
        return cli.main(argv)


def cli_command(*args: str) -> list[str]:
    """argv of a subprocess running ``streamtok *args``."""
    return [sys.executable, "-c", CLI_SNIPPET, *args]


def dir_bytes(directory: Path) -> dict[str, bytes]:
    """Every visible file of ``directory`` by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and not p.name.startswith(".")}


def output_bytes(directory: Path) -> dict[str, bytes]:
    """:func:`dir_bytes` of a finished tokenize output, after checking that each shard has its
    document index beside it: listed in the manifest with its sha256, portable (no mtime in
    its key) and holding exactly the shard's end-of-text offsets."""
    directory = Path(directory)
    files = dir_bytes(directory)
    manifest = json.loads(files["manifest.json"])
    assert manifest["complete"]
    listed = set()
    for shard in manifest["shards"]:
        name = shard["docidx"]
        assert name == shard["name"] + ".docidx"
        assert hashlib.sha256(files[name]).hexdigest() == shard["docidx_sha256"]
        arr = np.load(io.BytesIO(files[name]), allow_pickle=False)
        info = probe_shard(directory / shard["name"])
        tokens = np.memmap(directory / shard["name"], dtype=info.dtype, mode="r", offset=info.offset, shape=(info.n_tokens,))
        assert arr[2] == manifest["eot_token"] and arr[4] == -1 and arr[6] == shard["n_docs"]  # bos, portable, count
        np.testing.assert_array_equal(arr[8:], np.flatnonzero(tokens == manifest["eot_token"]))
        listed.add(name)
    assert {n for n in files if n.endswith(".docidx")} == listed
    return files


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(root, repo, names, commit=COMMIT, n_tokens=100, seed=None):
    """A Hugging Face cache holding ``names`` of dataset ``repo``: blobs, snapshot links, refs/main.

    Shard ``k`` holds ``n_tokens + k`` tokens: all ``k``, or random GPT-2 ids when ``seed`` is given.
    """
    rng = None if seed is None else np.random.default_rng(seed)
    base = root / f"datasets--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True)
    (base / "snapshots" / commit).mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    for k, name in enumerate(names):
        tmp = root / f"tmp_{name}"
        tokens = np.full(n_tokens + k, k, np.uint16) if rng is None else rng.integers(0, 50257, n_tokens + k, dtype=np.uint16)
        write_shard(tmp, tokens)
        data = tmp.read_bytes()
        tmp.unlink()
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob.name), base / "snapshots" / commit / name)
    return root


def make_hub_files(root, repo, files, repo_type="dataset", commit=COMMIT):
    """A Hugging Face cache holding ``files`` ({path in repo: bytes}) of ``repo`` at ``commit`` (refs/main)."""
    base = root / f"{repo_type}s--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = base / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return root


def offline_hub(monkeypatch, cache):
    """Point huggingface_hub at ``cache`` with downloads off, for this test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


N_FILLERS = 66_000  # pushes a trained tokenizer's vocabulary past 65,536 ids


def train_tokenizer(out: Path, *, big: bool) -> Path:
    """A real byte-level BPE ``tokenizer.json`` (+ ``tokenizer_config.json``) trained on four shipped plays.

    ``big=False``: 1,500 ids, ``<|endoftext|>`` its EOS (GPT-2-like, uint16 shards). ``big=True``:
    Llama-3-like: past 65,536 ids (uint32 shards, llm.c magic 20240801) with ``<|begin_of_text|>``
    its BOS, the last id. About 1.5 s.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    plays = Path(__file__).resolve().parent.parent / "data" / "shakespeare"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train([str(p) for p in sorted(plays.glob("*.txt"))[:4]], trainer)
    config: dict = {"eos_token": "<|endoftext|>"}
    if big:
        tok.add_special_tokens([f"<|filler_{i}|>" for i in range(N_FILLERS)] + ["<|begin_of_text|>"])
        config = {"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|endoftext|>"}
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out
