"""Hugging Face tokenizers (``tokenizer.json``) for ``streamtok tokenize --tokenizer``.

``--tokenizer`` is a ``tokenizer.json`` file, a directory holding one, or a Hub repo id whose
``tokenizer.json`` (and ``tokenizer_config.json``) are taken from ``huggingface_hub``'s cache
(downloaded once; with ``HF_HUB_OFFLINE=1`` only the cache is read). Encoding uses the
``tokenizers`` package (the ``hf`` extra) with special tokens in the text encoded as ordinary
text, as tiktoken's ``encode_ordinary`` does, so a document that spells ``<s>`` cannot forge a
boundary.

The document boundary written before every document is the tokenizer config's ``bos_token``
(Llama 3's ``<|begin_of_text|>``), else its ``eos_token`` (GPT-2's ``<|endoftext|>``); without
a config, the first well-known special token the tokenizer has. Its text and id are recorded in
the manifest. A boundary that text can produce would let a document forge boundaries, so it
is refused: it must be one of the tokenizer's *special* added tokens, and encoding its own text
(alone, after a space, after a letter) must not give its id. (``streamtok tokenize`` also
counts the boundary ids of every chunk against its documents.) Vocabularies above 65,536 ids give uint32 shards (llm.c magic 20240801, version 7).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, EncodingUnavailableError

WELL_KNOWN_BOUNDARIES = ("<|begin_of_text|>", "<s>", "<|endoftext|>", "</s>", "<|end_of_text|>")


@dataclass(frozen=True)
class HFTokenizer:
    """A resolved ``tokenizer.json``: where it is, what it is, and its document boundary.

    Args:
        source: the Hub repo id, or the absolute path of a local ``tokenizer.json``.
        path: the local ``tokenizer.json``.
        sha256: its digest (the tokenizer's identity in the manifest).
        boundary_token: the text of the token written before each document.
        boundary_id: its id.
        n_vocab: the largest id + 1.
    """

    source: str
    path: str
    sha256: str
    boundary_token: str
    boundary_id: int
    n_vocab: int

    def identity(self) -> dict[str, Any]:
        """What the manifest records about the tokenizer (no local paths: they differ by node)."""
        return {"source": self.source, "sha256": self.sha256, "boundary_token": self.boundary_token}


def resolve_tokenizer(source: str) -> HFTokenizer:
    """Find the ``tokenizer.json`` for ``source`` and read its vocabulary and boundary token.

    Args:
        source: a ``tokenizer.json`` path, a directory with one, or a Hub repo id.

    Raises:
        EncodingUnavailableError: ``tokenizers`` is missing, or the file cannot be found or read.
        ConfigError: no BOS/EOS token can be found to mark document boundaries.
    """
    tok_path, config_path = _locate(source)
    tok = load_tokenizer(tok_path)
    with open(tok_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    vocab = tok.get_vocab(with_added_tokens=True)
    name = _boundary_name(config_path, tok)
    if name is None or name not in vocab:
        raise ConfigError(
            f"tokenizer {source}: no BOS or EOS token to put before each document (tokenizer_config.json "
            f"has none{'' if config_path else ', and there is none beside tokenizer.json'}; known names "
            f"{', '.join(WELL_KNOWN_BOUNDARIES)} are not in its vocabulary)"
        )
    check_boundary(source, tok, name, vocab[name])
    # A local tokenizer is named by its absolute file path, so "dir" and "dir/tokenizer.json" agree.
    shown = tok_path if os.path.exists(source) else source
    return HFTokenizer(shown, tok_path, sha, name, vocab[name], max(vocab.values()) + 1)


def check_boundary(source: str, tok: Any, name: str, boundary_id: int) -> None:
    """Refuse a boundary token that document text can produce (it would forge document starts).

    Args:
        source: the tokenizer, for the message.
        tok: the tokenizer (encoding special-token text as text, see :func:`load_tokenizer`).
        name: the boundary token's text.
        boundary_id: its id.

    Raises:
        ConfigError: the token is not a special added token, or text encodes to it.
    """
    added = tok.get_added_tokens_decoder()
    entry = added.get(boundary_id)
    if entry is None or not entry.special:
        what = "an ordinary vocabulary entry" if entry is None else "an added token not marked special"
        raise ConfigError(
            f"tokenizer {source}: the document boundary {name!r} (id {boundary_id}) is {what}, not a special "
            "token: documents whose text produces it would forge document boundaries; set bos_token/eos_token "
            "in tokenizer_config.json to a special token of the tokenizer"
        )
    for text in (name, " " + name, "a" + name):
        if boundary_id in tok.encode(text, add_special_tokens=False).ids:
            raise ConfigError(
                f"tokenizer {source}: the text {text!r} encodes to the document boundary {name!r} (id {boundary_id}): "
                "documents that spell it would forge document boundaries; use a boundary token text cannot produce"
            )


def load_tokenizer(path: str) -> Any:
    """A ``tokenizers.Tokenizer`` from ``path`` that encodes special-token text as plain text.

    Args:
        path: a ``tokenizer.json``.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise EncodingUnavailableError("--tokenizer needs the tokenizers package; pip install 'streamtok[hf]'") from None
    try:
        tok = Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise EncodingUnavailableError(f"{path}: not a readable tokenizer.json ({str(exc)[:200]})") from None
    tok.encode_special_tokens = True
    return tok


def _locate(source: str) -> tuple[str, str | None]:
    if os.path.isdir(source):
        source = os.path.join(source, "tokenizer.json")
    if os.path.isfile(source):
        beside = os.path.join(os.path.dirname(os.path.abspath(source)), "tokenizer_config.json")
        return os.path.abspath(source), beside if os.path.isfile(beside) else None
    if source.endswith(".json") or os.sep in source.strip("/").replace("/", "", 1):
        raise EncodingUnavailableError(f"{source}: no such tokenizer.json")
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        tok_path = hf_hub_download(source, "tokenizer.json")
    except GatedRepoError:  # meta-llama/*: the README's own example, for anyone not yet let in
        raise EncodingUnavailableError(
            f"--tokenizer {source}: the Hub repo is gated; accept its terms on its page "
            f"({constants.ENDPOINT}/{source}) and log in (`hf auth login`, or HF_TOKEN), or give a path"
        ) from None
    except (HFValidationError, RepositoryNotFoundError, EntryNotFoundError, LocalEntryNotFoundError, OSError) as exc:
        raise EncodingUnavailableError(
            f"--tokenizer {source}: not a tokenizer.json file and no tokenizer.json of a Hub repo of that name in the "
            f"cache or on the Hub ({type(exc).__name__}); give a path, or download it once online"
        ) from None
    try:
        config = hf_hub_download(source, "tokenizer_config.json")
    except Exception:  # optional: many repos have none
        config = None
    return tok_path, config


def _boundary_name(config_path: str | None, tok: Any) -> str | None:
    if config_path is not None:
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{config_path}: not a readable tokenizer config ({exc})") from None
        for key in ("bos_token", "eos_token"):
            value = config.get(key) if isinstance(config, dict) else None
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                return value
    vocab = tok.get_vocab(with_added_tokens=True)
    return next((name for name in WELL_KNOWN_BOUNDARIES if name in vocab), None)
