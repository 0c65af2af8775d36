"""Which vocabulary a shard's ids belong to, from what the data itself says.

``streamtok inspect --check`` compares every id with a vocabulary size, counts documents by a
boundary id and decodes the first tokens; all three depend on the tokenizer the shard was made
with. A wrong guess is worse than none (GPT-2's 50,257 ids "finds" thousands of bad ids in a
Llama-3 shard and decodes it as gibberish), so each source of knowledge is asked in order and
the answer says which one spoke:

1. ``--encoding`` / ``--vocab-size`` on the command line (they win over everything);
2. the ``streamtok tokenize`` manifest beside the shard, when it lists the shard and matches it
   (read and checked by :func:`streamtok.documents.boundary.tokenize_record`, as the loader
   reads it: one that lists the shard and does not match is an error for that shard);
3. the llm.c header: magic 20240520 is GPT-2 (50,257 ids, boundary 50256), magic 20240801 is
   Llama 3 (128,256 ids, boundary ``<|begin_of_text|>`` 128000);
4. a headerless uint16 ``.bin``/``.npy``: GPT-2, *assumed* (nanoGPT's ``train.bin`` layout, and
   the loader's assumed boundary), and said to be;
5. anything else -- a Megatron ``.idx`` (whose dtype says only that the vocabulary is under
   65,500 ids for uint16, at least that for int32, as Megatron-LM picks it), or wider
   headerless ids -- is *unknown*: nothing is decoded and ``--check`` says it could not check.

The boundary of steps 2-4 is the loader's (:func:`streamtok.documents.boundary.shard_boundary`):
``inspect`` counts the documents a ``documents="mask"`` loader would find.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._formats import LLMC_FORMATS, MAGIC_LLAMA3, ShardInfo
from ..documents.boundary import format_boundary, tokenize_record
from ..documents.sidecar import LLAMA3_BOS  # noqa: F401  (kept importable from here, as inspect's)
from ..errors import EncodingUnavailableError
from .encoding import load_encoding

GPT2_VOCAB = 50_257
LLAMA3_VOCAB = 128_256
MEGATRON_UINT16_BELOW = 65_500  # Megatron-LM stores ids as uint16 below this vocabulary size, else int32


@dataclass(frozen=True)
class Vocabulary:
    """What is known of one shard's vocabulary.

    Attributes:
        size: ids must be in ``[0, size)``; ``None`` when unknown.
        boundary: the id that starts (or ends) each document; ``None``: none known (or a
            Megatron shard, whose ``.idx`` holds its document starts).
        encoding: a tiktoken encoding to decode the first tokens with, or ``None``.
        source: where the answer came from, for the report (e.g. ``"llm.c header (GPT-2)"``).
    """

    size: int | None
    boundary: int | None
    encoding: Any
    source: str


def shard_vocabulary(info: ShardInfo, *, encoding: str | None = None, vocab_size: int | None = None,
                     remote: Any = None) -> Vocabulary:
    """The vocabulary of the shard ``info`` describes, in the order of the module docstring.

    Args:
        info: the shard's probed layout (:func:`streamtok._formats.probe_shard`).
        encoding: a tiktoken encoding name given by the user; it overrides what the data says.
        vocab_size: a vocabulary size given by the user; it overrides every other size.
        remote: for a remote shard, its reader's :class:`~streamtok.storage.RemoteShards`, so
            that the tokenize manifest beside the object is read (as beside a local file).

    Raises:
        EncodingUnavailableError: ``encoding`` cannot be loaded and no ``vocab_size`` was given.
        ConfigError: the tokenize manifest beside the shard lists it but does not match it.
    """
    try:
        vocab = _from_data(info, encoding, remote)
    except EncodingUnavailableError:
        if vocab_size is None:
            raise
        vocab = Vocabulary(None, None, None, f"--encoding {encoding} (not available here)")
    if vocab_size is not None:
        return Vocabulary(vocab_size, vocab.boundary, vocab.encoding, f"--vocab-size {vocab_size}")
    return vocab


def _from_data(info: ShardInfo, encoding: str | None, remote: Any = None) -> Vocabulary:
    if encoding is not None:
        enc = load_encoding(encoding)
        return Vocabulary(enc.n_vocab, enc.eot_token, enc, f"--encoding {encoding}")
    record = tokenize_record(info, remote=remote) if info.kind != "megatron" else None
    if record is not None:
        enc = _gpt2() if record.encoding == "gpt2" else None
        return Vocabulary(record.n_vocab, record.boundary, enc, f"the tokenize manifest ({record.encoding or 'a Hugging Face tokenizer'})")
    boundary = format_boundary(info)  # the loader's own rule: both count the same documents
    token = boundary.token if boundary is not None else None
    if info.kind == "llmc":
        magic = next(m for m, (version, _) in LLMC_FORMATS.items() if version == info.version)  # checked on open
        if magic == MAGIC_LLAMA3:
            return Vocabulary(LLAMA3_VOCAB, token, None, f"llm.c header (magic {magic}: Llama 3)")
        return Vocabulary(GPT2_VOCAB, token, _gpt2(), f"llm.c header (magic {magic}: GPT-2)")
    if info.kind in ("raw", "npy") and info.dtype.name == "uint16":
        return Vocabulary(GPT2_VOCAB, token, _gpt2(), "GPT-2 assumed: uint16 without a header (nanoGPT's layout)")
    if info.kind == "megatron":
        bound = f"under {MEGATRON_UINT16_BELOW:,}" if info.dtype.itemsize <= 2 else f"{MEGATRON_UINT16_BELOW:,} or more"
        return Vocabulary(None, None, None, f"unknown: a Megatron {info.dtype.name} shard says only that its vocabulary is {bound} ids")
    return Vocabulary(None, None, None, f"unknown: {info.dtype.name} ids in a {info.kind} shard without a header")


def _gpt2() -> Any:
    try:
        return load_encoding("gpt2")
    except EncodingUnavailableError:  # the size is known anyway; only the decoding is lost
        return None
