"""``streamtok inspect``: what a shard holds, and whether every token id fits the vocabulary.

Per shard: format, dtype, header, token count, document count (end-of-text ids), largest id,
the first tokens decoded, and with ``--sha256`` the file's digest. The counts come from one
pass over the memory-mapped tokens in 16M-token slices (32 MB of uint16 at a time, so memory
stays flat; ~0.1 s per 100M tokens from the page cache). ``--check`` also fails on ids outside
``[0, vocab)`` -- negative ids of a signed ``.npy`` as well as ids at or above the vocabulary
size -- naming the first one's offset.

The documents' length distribution (count, median, p90, max) comes from the shard's document
index (:func:`streamtok.documents.sidecar.document_stats`): the ``.docidx`` that ``streamtok tokenize``
wrote or a loader cached, else one more vectorised scan (~1 s per GiB) that caches it; for a
Megatron shard, its ``.idx``. A leading partial document (begun in the shard before) counts.

The vocabulary comes from what the data says (:mod:`streamtok.prep.vocabulary`): the
``streamtok tokenize`` manifest beside the shard, the llm.c header (GPT-2 or Llama 3), GPT-2
assumed for headerless uint16 ids (nanoGPT's layout; said so), and otherwise -- a Megatron
shard, wider headerless ids -- unknown: nothing is decoded, and ``--check`` checks only that
no id is negative and says it could not check the rest. ``--encoding`` and ``--vocab-size``
override what the data says.

Exit status: 0 all good; 1 ``--check`` found out-of-vocabulary ids; 2 a shard could not be
read (its :class:`~streamtok.errors.ShardFormatError` is printed, the other shards still are),
or ``--check`` could not check a shard whose vocabulary is unknown (pass ``--vocab-size``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._formats import HEADER_INTS, LLMC_FORMATS, ShardInfo, probe_shard
from ..documents.sidecar import document_stats, stats_of_starts
from ..errors import ConfigError, StreamtokError
from ..shards import ShardLister, check_shard_path
from ..storage.urls import is_remote
from .shardsink import sha256_file
from .vocabulary import LLAMA3_BOS, LLAMA3_VOCAB, shard_vocabulary  # noqa: F401  (names kept importable from here)

SLICE_TOKENS = 1 << 24


@dataclass
class ShardReport:
    """What ``inspect`` found in one shard (``error`` set when it could not be read)."""

    path: str
    format: str = ""
    dtype: str = ""
    header: dict[str, Any] = field(default_factory=dict)
    n_tokens: int = 0
    n_docs: int = 0
    max_token: int = -1
    min_token: int = -1
    first_bad_offset: int | None = None
    first_bad_token: int | None = None
    n_bad: int = 0
    n_negative: int = 0
    sha256: str | None = None
    head_tokens: list[int] = field(default_factory=list)
    head_text: str | None = None
    documents: dict[str, Any] | None = None  # n_documents, median, p90, max (tokens); None: unknown
    vocab_size: int | None = None  # None: unknown (ids not checked against a vocabulary)
    vocab_source: str = ""  # where vocab_size came from
    error: str | None = None


def scan_shard(
    path: str, *, vocab_size: int | None, eot: int | None, raw_dtype: str = "uint16", head: int = 16, sha256: bool = False
) -> ShardReport:
    """Read one shard's header and scan its ids.

    Args:
        path: the shard file.
        vocab_size: ids must be in ``[0, vocab_size)``; others are counted in ``n_bad``
            (``None``: unknown, only negative ids are counted).
        eot: the end-of-text id counted as documents (``None``: not counted).
        raw_dtype: the dtype of headerless ``.bin`` files.
        head: how many leading tokens to report.
        sha256: also hash the file.

    Raises:
        ShardFormatError, ShardNotFoundError: the file cannot be read as a shard.
    """
    info = _probe(path, raw_dtype)
    rep = ShardReport(path, info.kind, info.dtype.name, _header(info), info.n_tokens, vocab_size=vocab_size)
    tokens = _tokens(path, info, raw_dtype)
    signed = info.dtype.kind == "i"
    for lo in range(0, info.n_tokens, SLICE_TOKENS):
        part = tokens[lo : lo + SLICE_TOKENS]
        low, high = int(part.min()), int(part.max())
        rep.max_token = max(rep.max_token, high)
        rep.min_token = low if lo == 0 else min(rep.min_token, low)
        if eot is not None:
            rep.n_docs += int(np.count_nonzero(part == eot))
        # Python ints compare exactly with any numpy integer dtype, so no cast can wrap here.
        above = vocab_size is not None and high >= vocab_size
        bad = part >= vocab_size if above else np.zeros(len(part), dtype=bool)
        if signed and low < 0:
            negative = part < 0
            rep.n_negative += int(np.count_nonzero(negative))
            bad |= negative
        n_bad = int(np.count_nonzero(bad))
        if n_bad and rep.first_bad_offset is None:
            k = int(np.argmax(bad))
            rep.first_bad_offset, rep.first_bad_token = lo + k, int(part[k])
        rep.n_bad += n_bad
    rep.head_tokens = [int(t) for t in tokens[:head]]
    del tokens
    if sha256:
        rep.sha256 = _remote_sha256(path, raw_dtype) if is_remote(path) else sha256_file(path)
    return rep


def _remote_reader(path: str, raw_dtype: str) -> Any:
    """A one-shard reader over a remote object (opened once per path and dtype)."""
    from ..reader import MemmapReader

    key = (path, raw_dtype)
    if key not in _REMOTE:
        lister = ShardLister([path])
        # What the listing of its prefix saw (the tokenize manifest beside it among them): the
        # manifest's version is then known, and read once for all the prefix's shards.
        lister.objects.update({k: v for k, v in _LISTED.items() if k not in lister.objects})
        _REMOTE[key] = MemmapReader(lister, raw_dtype=raw_dtype)
    return _REMOTE[key]


_REMOTE: dict[tuple[str, str], Any] = {}
_LISTED: dict[str, Any] = {}  # objects the listings of inspect's remote sources saw, by URL


def _probe(path: str, raw_dtype: str) -> ShardInfo:
    return _remote_reader(path, raw_dtype).infos[0] if is_remote(path) else probe_shard(path, raw_dtype=raw_dtype)


def _tokens(path: str, info: ShardInfo, raw_dtype: str) -> Any:
    """The shard's tokens: a memory map, or for an object an array-like whose slices are ranged reads."""
    if is_remote(path):
        return _remote_reader(path, raw_dtype).shard_array(0)
    return np.memmap(path, dtype=info.dtype, mode="r", offset=info.offset, shape=(info.n_tokens,))


def _remote_sha256(path: str, raw_dtype: str) -> str:
    import hashlib

    remote = _remote_reader(path, raw_dtype).remote
    obj, h, step = remote.objects[0], hashlib.sha256(), 32 << 20
    for a in range(0, obj.size, step):
        h.update(remote.store.fetch_range(obj, a, min(obj.size, a + step)))
    return h.hexdigest()


def document_lengths(path: str, *, bos_id: int | None, raw_dtype: str = "uint16") -> dict[str, Any] | None:
    """Documents of one shard and their length distribution, from its document index.

    Args:
        path: the shard file.
        bos_id: the token that starts a document (ignored for Megatron shards); ``None``:
            the format's default.
        raw_dtype: the dtype of headerless ``.bin`` files.

    Returns:
        ``{"n_documents", "median", "p90", "max"}`` (lengths in tokens), or ``None`` when no
        boundary token is known for the shard.
    """
    try:
        if is_remote(path):
            from ..storage.docs import remote_document_starts

            reader = _remote_reader(path, raw_dtype)
            starts = remote_document_starts(reader.remote, 0, bos_id=bos_id)
            stats = stats_of_starts(path, starts, reader.infos[0].n_tokens)
        else:
            stats = document_stats(path, bos_id=bos_id, raw_dtype=raw_dtype)
    except ConfigError:  # uint32/int tokens without a header and no --encoding: no boundary known
        return None
    return {"n_documents": stats.n_documents, "median": stats.median, "p90": stats.p90, "max": stats.max}


def _header(info: ShardInfo) -> dict[str, Any]:
    if info.kind == "llmc" and is_remote(info.path):  # the header was read and checked when it was opened
        magic = next(m for m, (v, _) in LLMC_FORMATS.items() if v == info.version)
        return {"magic": magic, "version": info.version, "n_tokens": info.n_tokens, "bytes": info.offset}
    if info.kind == "llmc":
        ints = np.fromfile(info.path, dtype="<i4", count=HEADER_INTS)
        return {"magic": int(ints[0]), "version": int(ints[1]), "n_tokens": int(ints[2]), "bytes": info.offset}
    if info.kind == "npy":
        return {"shape": [info.n_tokens], "dtype": info.dtype.str, "bytes": info.offset}
    return {"bytes": 0}


def _print_text(rep: ShardReport, check: bool = False) -> None:
    if rep.error:
        print(f"{rep.path}: error: {rep.error}", file=sys.stderr)
        return
    hdr = ", ".join(f"{k} {v}" for k, v in rep.header.items())
    print(f"{rep.path}")
    print(f"  format {rep.format}, dtype {rep.dtype}, header: {hdr}")
    low = f"min token id {rep.min_token}, " if rep.min_token < 0 else ""
    vocab = f"vocab {rep.vocab_size} from {rep.vocab_source}" if rep.vocab_size is not None else f"vocab {rep.vocab_source}"
    print(f"  {rep.n_tokens:,} tokens, {rep.n_docs:,} documents, {low}max token id {rep.max_token} ({vocab})")
    if rep.n_bad:
        if rep.vocab_size is None:
            what = "negative ids"
        elif rep.n_negative:
            what = f"ids outside 0..{rep.vocab_size - 1} ({rep.n_negative:,} negative, {rep.n_bad - rep.n_negative:,} >= {rep.vocab_size})"
        else:
            what = f"ids >= {rep.vocab_size}"
        print(f"  {rep.n_bad:,} {what}; first at token offset {rep.first_bad_offset} (id {rep.first_bad_token})")
    if check and rep.vocab_size is None:
        print("  --check: ids not checked against a vocabulary, which is not known for this shard; "
              "pass --vocab-size N or --encoding NAME")
    if rep.documents is not None:
        d = rep.documents
        partial = " (one begun before the shard)" if d["n_documents"] == rep.n_docs + 1 and rep.format != "megatron" else ""
        print(
            f"  {d['n_documents']:,} documents by the index{partial}, length median {d['median']:g}, "
            f"p90 {d['p90']:g}, max {d['max']:,} tokens"
        )
    else:
        print("  document lengths: – (no document boundary token known; pass --encoding)")
    if rep.sha256:
        print(f"  sha256 {rep.sha256}")
    print(f"  first tokens {rep.head_tokens}")
    if rep.head_text is not None:
        print(f"  decoded {rep.head_text!r}")


def register(subparsers: Any) -> None:
    """Add ``streamtok inspect`` to the ``streamtok`` command.

    Args:
        subparsers: from ``ArgumentParser.add_subparsers``.
    """
    p = subparsers.add_parser(
        "inspect", help="show what token shards hold; --check their ids",
        description=__doc__.split("\n\n")[0].replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="shard files, directories or globs; or URLs (s3://, gs://, az://, https://, hf://) of objects, prefixes or globs")
    p.add_argument("--encoding", help="tiktoken encoding for decoding and the vocab size (default: what the data says: "
                   "tokenize manifest, llm.c header, GPT-2 for headerless uint16; unknown for Megatron shards)")
    p.add_argument("--vocab-size", type=int, help="ids must be below this (default: the encoding's, or what the data says)")
    p.add_argument("--raw-dtype", default="uint16", help="dtype of headerless .bin files (default uint16)")
    p.add_argument("--head", type=int, default=16, metavar="N", help="decode the first N tokens (default 16)")
    p.add_argument("--sha256", action="store_true", help="also print each file's sha256")
    p.add_argument("--check", action="store_true", help="exit 1 when an id is outside [0, vocab); 2 when the vocab is unknown")
    p.add_argument("--json", action="store_true", help="one JSON object per shard, one per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``streamtok inspect`` (see the module docstring for the exit status).

    Args:
        args: the parsed command line.
    """
    paths = [p for src in args.paths for p in _expand(src)]
    status = 0
    for path in paths:
        try:
            if not is_remote(path):
                check_shard_path(path)
            info = _probe(path, args.raw_dtype)
            remote = _remote_reader(path, args.raw_dtype).remote if is_remote(path) else None
            vocab = shard_vocabulary(info, encoding=args.encoding, vocab_size=args.vocab_size, remote=remote)
            rep = scan_shard(path, vocab_size=vocab.size, eot=vocab.boundary, raw_dtype=args.raw_dtype, head=args.head, sha256=args.sha256)
            rep.vocab_source = vocab.source
            rep.documents = document_lengths(path, bos_id=vocab.boundary, raw_dtype=args.raw_dtype)
            if rep.documents is not None and (rep.format == "megatron" or vocab.boundary is None):
                rep.n_docs = rep.documents["n_documents"]  # the index says where documents start, not an id given here
            if vocab.encoding is not None:
                ids = [t for t in rep.head_tokens if 0 <= t < vocab.encoding.n_vocab]
                rep.head_text = vocab.encoding.decode(ids, errors="replace")
        except StreamtokError as exc:
            rep, status = ShardReport(path, error=str(exc)), 2
        if args.check and rep.n_bad:
            status = max(status, 1)
        if args.check and rep.error is None and rep.vocab_size is None:
            status = 2
        if args.json:
            print(json.dumps(asdict(rep)))
        else:
            _print_text(rep, args.check)
    return status


def _expand(source: str) -> list[str]:
    try:
        lister = ShardLister(source)
        _LISTED.update(lister.objects)
        return list(lister.paths)
    except StreamtokError:
        return [source]  # reported per path by scan_shard
