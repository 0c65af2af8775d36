"""Which token starts each document of a source: taken from what the data says, checked, never missing.

``documents="mask" | "bos" | "pack"`` split rows at a boundary token (or read a Megatron
``.idx``). A wrong token is silent: a token that never occurs gives one segment per row, as
``"stream"`` does. So the token is asked of each shard in this order, and the answer says
which one spoke:

1. ``bos_id=`` given to the loader (it wins over everything);
2. the ``streamtok tokenize`` manifest beside the shard (``manifest.json``), when it lists the
   shard by name. It is checked before it is believed: the shard's dtype, token count and
   sha256 must be the ones listed, and the shard must hold as many of its boundary token as
   the documents listed (an edited ``eot_token`` counts other ids). A manifest that lists the shard and does not match it is
   *refused* (``ConfigError``: the shard changed after tokenize, or the manifest is another
   run's), never skipped, since skipping would fall back to a default that may be wrong. A
   ``manifest.json`` that cannot be read, is not a tokenize manifest, or does not list the
   shard says nothing about it and is ignored;
3. the format: a Megatron shard's ``.idx`` holds its document starts (no token); an llm.c
   header with magic 20240520 means GPT-2's ``<|endoftext|>`` (50256), magic 20240801 Llama 3's
   ``<|begin_of_text|>`` (128000), as llm.c writes them;
4. uint16 tokens without a header (raw ``.bin``, ``.npy``): 50256, *assumed* (nanoGPT's
   ``train.bin`` layout); the loader warns that it assumed it;
5. anything else (wider ids without a header) is unknown: a ``ConfigError`` that names the
   shards and asks for ``bos_id=...``.

The shards of one source must agree on one token (one index per source); a mixture asks this
of each of its sources. Cost: one read of each directory's ``manifest.json`` and, for each
shard it lists, its sha256 -- remembered per version of the file (:mod:`streamtok._digest`),
the digest the document index is keyed on anyway -- and its document index with the listed
token, which the loader opens next: nothing is read twice.

``streamtok inspect`` and ``streamtok locate --text`` read the manifest through
:func:`tokenize_record` too: one reader of it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._digest import file_sha256
from .._files import read_regular
from .._formats import MAGIC_GPT2, MAGIC_LLAMA3, ShardInfo, probe_shard
from ..errors import ConfigError
from ..storage.urls import basename, dirname, is_remote, redact_queries
from .sidecar import GPT2_EOT, LLAMA3_BOS, cache_dir, default_bos_id, document_starts

MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 256 << 20  # a tokenize manifest lists its shards: large, never this large
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TokenizeRecord:
    """What a checked ``streamtok tokenize`` manifest says about one shard it lists.

    Attributes:
        manifest: the manifest's path.
        boundary: the token written before each document (``eot_token``).
        n_vocab: ids are in ``[0, n_vocab)``.
        encoding: the tiktoken encoding's name, or ``None`` (a Hugging Face tokenizer).
        tokenizer: the Hugging Face tokenizer's identity (``source``, ``sha256``,
            ``boundary_token``), or ``None``.
    """

    manifest: str
    boundary: int
    n_vocab: int
    encoding: str | None
    tokenizer: dict[str, Any] | None


@dataclass(frozen=True)
class Boundary:
    """The boundary token of a shard or a source, and who said so.

    Attributes:
        token: the id that starts a document; ``None``: Megatron shards (their ``.idx``).
        source: where it came from, for messages (``"bos_id=5"``, ``"the tokenize manifest ..."``).
        assumed: the data does not say; a convention was assumed (headerless uint16: GPT-2).
    """

    token: int | None
    source: str
    assumed: bool = False

    def describe(self) -> str:
        """``bos_id=N`` and where it came from (``bos_id=N`` alone when it was given)."""
        if self.token is None:
            return "bos_id=None: Megatron .idx"
        if self.source == f"bos_id={self.token}":
            return self.source
        return f"bos_id={self.token}, {'assumed' if self.assumed else 'from'} {self.source}"


def _read_manifest(directory: str) -> tuple[str, dict[str, Any], dict[str, list[Any]]] | None:
    """``(path, manifest, its shard entries by name)`` of a readable tokenize manifest in
    ``directory``, else ``None``."""
    path = os.path.join(directory, MANIFEST)
    try:
        raw = read_regular(path, MANIFEST_MAX_BYTES)
    except OSError:
        return None  # absent, unreadable, a FIFO or a link: it says nothing
    return _parse_manifest(path, raw)


def _read_remote_manifest(remote: Any, shard_url: str) -> tuple[str, dict[str, Any], dict[str, list[Any]]] | None:
    """As :func:`_read_manifest`, for the manifest beside a remote shard (one GET at most,
    cached per version: :mod:`streamtok.storage.manifests`)."""
    from ..storage.manifests import fetch_manifest

    found = fetch_manifest(remote, shard_url, MANIFEST_MAX_BYTES)
    return None if found is None else _parse_manifest(redact_queries(found[0]), found[1])


def _parse_manifest(path: str, raw: bytes) -> tuple[str, dict[str, Any], dict[str, list[Any]]] | None:
    try:
        manifest = json.loads(raw)
    except ValueError:
        return None  # not JSON: it says nothing
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        return None  # another tool's manifest.json
    by_name: dict[str, list[Any]] = {}
    for entry in manifest["shards"]:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            by_name.setdefault(entry["name"], []).append(entry)
    return path, manifest, by_name


def _refuse(manifest: str, name: str, what: str) -> ConfigError:
    return ConfigError(
        f"{manifest}: lists shard {name} but {what}: the shard changed after streamtok tokenize wrote it, or the "
        "manifest is another run's, so the boundary token it names is not trusted; pass bos_id=... (the id "
        "written before each document), or tokenize again"
    )


def tokenize_record(info: ShardInfo, *, cache: dict[str, Any] | None = None, remote: Any = None) -> TokenizeRecord | None:
    """What the ``streamtok tokenize`` manifest beside a shard says of it, checked against the shard.

    Args:
        info: the probed shard.
        cache: manifests read so far, by directory (pass one dict for many shards of a directory).
        remote: for a remote shard, its reader's :class:`~streamtok.storage.RemoteShards`:
            the manifest beside the object is fetched (one GET, cached per version) and
            checked as a local one is, the shard's sha256 and document count coming from
            one read of the object, cached with its document index.

    Returns:
        The record, or ``None`` when no readable tokenize manifest beside the shard lists it
        (and for a remote shard without ``remote``).

    Raises:
        ConfigError: the manifest lists the shard, but its dtype, token count, sha256 or count
            of boundary tokens are not the shard's, or its entries are malformed.
    """
    k = None
    if is_remote(info.path):
        k = remote.index_of(info.path) if remote is not None else None
        if k is None:
            return None
        directory = dirname(info.path)
    else:
        directory = os.path.dirname(os.path.abspath(info.path))
    if cache is not None and directory in cache:
        found = cache[directory]
    else:
        found = _read_manifest(directory) if k is None else _read_remote_manifest(remote, info.path)
        if cache is not None:
            cache[directory] = found
    if found is None:
        return None
    path, manifest, by_name = found
    name = basename(info.path)
    entries = by_name.get(name)
    if not entries:
        return None
    if len(entries) > 1:
        raise _refuse(path, name, f"lists it {len(entries)} times")
    entry = entries[0]
    boundary, n_vocab = manifest.get("eot_token"), manifest.get("n_vocab")
    if type(boundary) is not int or type(n_vocab) is not int or not 0 <= boundary < n_vocab:
        raise _refuse(path, name, f"its eot_token {boundary!r} is not an id below its n_vocab {n_vocab!r}")
    if manifest.get("dtype") != info.dtype.name:
        raise _refuse(path, name, f"says dtype {manifest.get('dtype')!r} where the shard holds {info.dtype.name}")
    if entry.get("n_tokens") != info.n_tokens:
        raise _refuse(path, name, f"says {entry.get('n_tokens')!r} tokens where the shard holds {info.n_tokens}")
    listed = entry.get("sha256")
    if not (isinstance(listed, str) and _SHA256.fullmatch(listed)):
        raise _refuse(path, name, f"its sha256 {listed!r} is not a sha256 hex digest")
    n_docs = entry.get("n_docs")
    if k is not None:  # a remote shard: its digest and its documents from one read of the object
        from ..storage.docs import remote_sha256_and_starts

        actual, remote_starts = remote_sha256_and_starts(remote, k, bos_id=boundary)
    else:
        actual = file_sha256(info.path, cache_dir())  # remembered per file version: the index needs it too
    if actual != listed:
        raise _refuse(path, name, f"says sha256 {listed[:16]}... where the shard's is {actual[:16]}...")
    # The boundary itself: tokenize counted its ids in each shard. An edited eot_token counts
    # other ids; the index built here with it is the one the loader opens next (no second scan).
    if type(n_docs) is not int or n_docs < 0:
        raise _refuse(path, name, f"its n_docs {n_docs!r} is not a count")
    if k is not None:
        held = len(remote_starts)
    else:
        held = len(document_starts(info.path, bos_id=boundary, raw_dtype=info.dtype.name if info.kind == "raw" else "uint16"))
    if held != n_docs:
        raise _refuse(path, name, f"says {n_docs} documents where the shard holds {held} of its eot_token {boundary}")
    encoding, tokenizer = manifest.get("encoding"), manifest.get("tokenizer")
    return TokenizeRecord(
        path, boundary, n_vocab, encoding if isinstance(encoding, str) else None,
        tokenizer if isinstance(tokenizer, dict) else None,
    )


def format_boundary(info: ShardInfo) -> Boundary | None:
    """The boundary the shard's format implies (steps 3-4 of the module docstring), or ``None``.

    Args:
        info: the probed shard.
    """
    if info.kind == "megatron":
        return Boundary(None, "Megatron .idx")
    try:
        token = default_bos_id(info)
    except ConfigError:
        return None
    if info.kind == "llmc":
        if token == LLAMA3_BOS:
            return Boundary(token, f"the llm.c header (magic {MAGIC_LLAMA3}: Llama 3's <|begin_of_text|>)")
        return Boundary(token, f"the llm.c header (magic {MAGIC_GPT2}: GPT-2's <|endoftext|>)")
    # default_bos_id names a token without a header for uint16 only
    return Boundary(token, "for uint16 tokens without a header (GPT-2's <|endoftext|>, nanoGPT's layout)", assumed=True)


def shard_boundary(info: ShardInfo, *, cache: dict[str, Any] | None = None, remote: Any = None) -> Boundary | None:
    """The boundary token of one shard from what the data says (steps 2-4), or ``None`` if unknown.

    Args:
        info: the probed shard.
        cache: manifests read so far, by directory (see :func:`tokenize_record`).
        remote: the reader's remote side, for remote shards (see :func:`tokenize_record`).

    Raises:
        ConfigError: a tokenize manifest lists the shard but does not match it.
    """
    if info.kind != "megatron":
        record = tokenize_record(info, cache=cache, remote=remote)
        if record is not None:
            return Boundary(record.boundary, f"the tokenize manifest {record.manifest}")
    return format_boundary(info)


def _names(paths: list[str]) -> str:
    shown = ", ".join(os.path.basename(p) for p in paths[:3]) + (f", ... ({len(paths)} shards)" if len(paths) > 3 else "")
    return f"{dirname(paths[0]) or '.'}/[{shown}]"


def resolve_boundary(infos: Iterable[ShardInfo], bos_id: int | None = None, *, remote: Any = None) -> Boundary:
    """The one boundary token of a source's shards (the module docstring's order).

    Args:
        infos: the probed shards of the source.
        bos_id: the token given by the user, or ``None`` to ask the data.
        remote: the reader's :class:`~streamtok.storage.RemoteShards` when some shards are
            objects in a store: the tokenize manifests beside them are read too.

    Returns:
        The boundary; its ``token`` is ``None`` only when every shard is Megatron's.

    Raises:
        ConfigError: ``bos_id`` is not a token id; no token is known for some shards (named);
            the shards disagree; a tokenize manifest lists a shard but does not match it.
    """
    if bos_id is not None:
        try:
            ok = not isinstance(bos_id, bool) and int(bos_id) == bos_id and bos_id >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"bos_id must be a non-negative token id or None, not {bos_id!r}")
        return Boundary(int(bos_id), f"bos_id={int(bos_id)}")
    cache: dict[str, Any] = {}
    found: dict[int, list[tuple[Boundary, str]]] = {}
    unknown: list[ShardInfo] = []
    for info in infos:
        b = shard_boundary(info, cache=cache, remote=remote)
        if b is None:
            unknown.append(info)
        elif b.token is not None:
            found.setdefault(b.token, []).append((b, info.path))
    if unknown:
        dtypes = sorted({i.dtype.name for i in unknown})
        raise ConfigError(
            f"{_names([i.path for i in unknown])}: {'/'.join(dtypes)} tokens without an llm.c header, and no "
            f"streamtok tokenize manifest beside them lists them: nothing says which token starts a document "
            f"(llm.c headers say {GPT2_EOT} for GPT-2, {LLAMA3_BOS} for Llama 3). Pass bos_id=... (the id your "
            "tokenizer writes before each document), or use documents='stream'"
        )
    if not found:
        return Boundary(None, "Megatron .idx")
    if len(found) > 1:
        (t1, (b1, p1)), (t2, (b2, p2)) = [(t, said[0]) for t, said in list(found.items())[:2]]
        raise ConfigError(
            f"the shards of one source disagree on the token that starts a document: {p1} has {t1} ({b1.source}), "
            f"{p2} has {t2} ({b2.source}); pass bos_id=..., or give them as separate sources of a mixture"
        )
    [(token, said)] = found.items()
    sources = list(dict.fromkeys(b.source for b, _ in said))
    assumed = [p for b, p in said if b.assumed]
    if assumed:
        return Boundary(token, f"{'; '.join(sources)} ({_names(assumed)})", assumed=True)
    return Boundary(token, "; ".join(sources))


def boundary_token(source: Any, *, bos_id: int | None = None, raw_dtype: str = "uint16") -> int | None:
    """The token that starts each document of one source (for each source of a mixture, too).

    Args:
        source: a :class:`~streamtok.MemmapReader`, or a :class:`~streamtok.ShardLister` of
            local shards (probed here; a reader for remote ones).
        bos_id: the user's token; it wins.
        raw_dtype: the dtype of headerless ``.bin`` shards (a lister's).

    Returns:
        The token; ``None`` when every shard is a Megatron shard (its ``.idx`` has the starts).

    Raises:
        ConfigError: as :func:`resolve_boundary`: none known (naming the shards and asking
            for ``bos_id=...``), a disagreement, or a manifest that does not match its shards.
    """
    infos = getattr(source, "infos", None)
    if infos is None:
        paths = list(source.paths)
        remote = [p for p in paths if is_remote(p)]
        if remote:
            raise ConfigError(f"boundary_token: {remote[0]} is remote; pass a MemmapReader of the lister, which reads its header")
        infos = [probe_shard(p, raw_dtype=raw_dtype) for p in paths]
    return resolve_boundary(infos, bos_id, remote=getattr(source, "remote", None)).token
