"""Opening remote shards: sizes, headers and fingerprint samples with ranged requests, concurrently.

Per shard: the first ``HEAD_BYTES`` (the llm.c header or ``.npy`` header and the first
fingerprint sample behind it) and the last ``FINGERPRINT_BYTES`` (the second sample). A shard
whose two ranges are at most ``OPEN_GAP`` bytes apart (64 KiB: under 1 ms of transfer at 100
MB/s, against a request saved) is read whole in ONE ranged GET; a larger one takes two GETs
issued together (S3 has no multi-range GET). An S3, GCS or Azure object that no listing
described (an explicit URL) is not asked for with a HEAD: its first GET, of ``FIRST_BYTES``
and without ``If-Match``, returns its size and ETag with its bytes, and a large one's tail
GET then carries that ETag (an empty object, which S3 answers with 416, gets a HEAD);
``https://`` objects get a HEAD first: their servers' ETags and ranges past the end are less
uniform; an ``hf://`` file no listing described, the Hub's metadata of it (:func:`.hub.file_ref`). A Megatron ``.bin`` adds one GET of its ``.idx``. All shards are
probed at once, up to ``max_in_flight`` requests in flight, so 1000 shards at 30 ms per
request wait about ``1000 / 256 * 30 ms`` ≈ 0.12 s (0.25 s at two GETs a shard), not the
30-60 s of one request after another; a loopback server's requests/s, not the latency,
then bounds the time (benchmarks/RESULTS.md, "Opening a loader over 1000 remote shards").
A restart over the same objects reads nothing but the listing
(:mod:`streamtok.storage.metacache`), or, for objects no listing described, a HEAD each.

The checks are the local ones (:mod:`streamtok._formats`): the same header parsing, the
same size-against-header rules, the same messages, naming the object's URL.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._formats import (
    HEADER_BYTES,
    LLMC_FORMATS,
    LLMC_OTHER_FILES,
    MAGIC_GPT2,
    MAGIC_LLAMA3,
    ShardInfo,
    llmc_info,
    megatron_info,
    parse_megatron_index,
    parse_npy_header,
    raw_info,
)
from ..errors import ShardFormatError, ShardNotFoundError
from . import urls
from .refs import ObjectRef
from .store import RemoteStore

FINGERPRINT_BYTES = 4096  # as streamtok.reader.FINGERPRINT_BYTES
HEAD_BYTES = HEADER_BYTES + FINGERPRINT_BYTES
OPEN_GAP = 64 << 10  # bytes between the head and tail ranges that are fetched rather than asked for twice
FIRST_BYTES = HEAD_BYTES + OPEN_GAP + FINGERPRINT_BYTES  # the most one GET reads of an unlisted object
GET_FIRST_SCHEMES = ("s3", "gs", "az", "abfs")  # stores whose GET answers give size and ETag, ranges clamped


@dataclass(frozen=True)
class Probed:
    """One remote shard, opened: its object, its layout, and its fingerprint sample."""

    ref: ObjectRef
    info: ShardInfo
    sample: bytes  # first and last FINGERPRINT_BYTES of its token bytes
    index: ObjectRef | None = None  # a Megatron shard's .idx


def megatron_index_url(url: str) -> str | None:
    return url[: -len(".bin")] + ".idx" if url.endswith(".bin") else None


async def _probe_one(store: RemoteStore, url: str, known: Mapping[str, ObjectRef | None], raw_dtype: np.dtype) -> Probed:
    ref, first = known.get(url), None
    if ref is None and urls.parse(url).scheme in GET_FIRST_SCHEMES:
        ref, first = await store.fetch_first_async(url, FIRST_BYTES)
    elif ref is None:
        ref = await store.head_async(url)
    size = ref.size
    if size == 0:
        raise ShardFormatError(f"{ref.describe()}: the shard is empty (0 bytes); delete it or re-create it")
    tail_n = min(FINGERPRINT_BYTES, size)
    if first is not None:  # read from the start already: all of a small object, or its head
        head = bytes(first)
        tail = head[size - tail_n :] if len(head) == size else bytes(await store.fetch_range_async(ref, size - tail_n, size))
    elif size - tail_n - min(size, HEAD_BYTES) <= OPEN_GAP:  # one GET of the whole (small) object
        head = bytes(await store.fetch_range_async(ref, 0, size))
        tail = head[size - tail_n :]
    else:
        head_mv, tail_mv = await asyncio.gather(
            store.fetch_range_async(ref, 0, HEAD_BYTES), store.fetch_range_async(ref, size - tail_n, size)
        )
        head, tail = bytes(head_mv), bytes(tail_mv)
    index_ref = None
    if url.endswith(".npy"):
        info = parse_npy_header(url, size, io.BytesIO(head))
        if info.offset + min(FINGERPRINT_BYTES, info.nbytes) > len(head):  # a long .npy header
            head = bytes(await store.fetch_range_async(ref, 0, info.offset + min(FINGERPRINT_BYTES, info.nbytes)))
    else:
        magic = int(np.frombuffer(head[:4], dtype="<i4")[0]) if len(head) >= 4 else None
        if magic in LLMC_FORMATS:
            info = llmc_info(url, size, head[:HEADER_BYTES])
        elif magic in LLMC_OTHER_FILES:
            raise ShardFormatError(
                f"{url}: starts with llm.c magic {magic}: it is {LLMC_OTHER_FILES[magic]}, "
                f"not a token shard (llm.c token shards have magic {MAGIC_GPT2} or {MAGIC_LLAMA3})"
            )
        else:
            idx_url = megatron_index_url(url)
            if idx_url is not None:
                index_ref = known.get(idx_url)
                if idx_url not in known:  # no listing said: is there a .idx beside it?
                    try:
                        index_ref = await store.head_async(idx_url)
                    except ShardNotFoundError:
                        index_ref = None
            if index_ref is not None:
                data = np.frombuffer(bytes(await store.fetch_range_async(index_ref, 0, index_ref.size)), dtype=np.uint8)
                index = parse_megatron_index(idx_url, data[:64].tobytes(), index_ref.size, lambda: data)  # type: ignore[arg-type]
                info = megatron_info(url, size, index)
            else:
                info = raw_info(url, size, raw_dtype)
    n = min(FINGERPRINT_BYTES, info.nbytes)
    sample = head[info.offset : info.offset + n] + tail[len(tail) - n :]
    return Probed(ref, info, sample, index_ref)


def probe_remote(store: RemoteStore, shard_urls: Sequence[str], known: Mapping[str, ObjectRef | None],
                 raw_dtype: np.dtype) -> list[Probed]:
    """Open every remote shard of ``urls`` at once (see the module docstring).

    Args:
        store: the client.
        urls: the shards' URLs.
        known: objects a listing (or a HEAD) already described; a ``.bin``'s ``.idx``
            found there (or there as ``None``: known to be absent) is not asked for.
        raw_dtype: the dtype of headerless shards.
    """

    async def all_of() -> list[Probed]:
        return list(await asyncio.gather(*(_probe_one(store, u, known, raw_dtype) for u in shard_urls)))

    return store.run(all_of()) if shard_urls else []
