"""``streamtok download``: fetch only the shards you need from a Hugging Face dataset repo.

Shards are named by number, as llm.c's fineweb script names them: in
``karpathy/fineweb-edu-100B-gpt2-token-shards`` the validation shard is
``edu_fineweb_val_000000.bin`` and the 1000 training shards are ``edu_fineweb_train_000001.bin``
to ``edu_fineweb_train_001000.bin`` (100M GPT-2 tokens, ~200 MB each). A SPEC picks training
shards by those numbers: ``3`` (one shard), ``1:3`` (shards 1, 2 and 3: inclusive, like
``seq 1 3``), ``:10`` (1 to 10), lists ``1,5,7:9``, or file names taken literally;
``--val`` adds the validation shard. Other repos need ``--pattern`` (a ``str.format`` string with
``{split}`` and ``{index}``) unless listed in ``KNOWN_PATTERNS``.

Each file is fetched with ``huggingface_hub.hf_hub_download`` (resumes ``.incomplete`` partial
downloads, verifies sizes, shows progress) under a ``filelock`` per file, so processes on one
node that ask for the same file download it once and the others wait and reuse it. Under
``torch.distributed``, local rank 0 downloads while the other ranks wait at a barrier, then
read the files from disk without touching the network.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from .._formats import probe_shard
from ..errors import ConfigError, HubError, StreamtokError
from ..shards import ShardLister

DEFAULT_REPO = "karpathy/fineweb-edu-100B-gpt2-token-shards"
KNOWN_PATTERNS = {
    DEFAULT_REPO: "edu_fineweb_{split}_{index:06d}.bin",
    "kjj0/fineweb10B-gpt2": "fineweb_{split}_{index:06d}.bin",
    "kjj0/finewebedu10B-gpt2": "finewebedu_{split}_{index:06d}.bin",
}
Spec = str | int | Sequence[int | str] | None
_RANGE = re.compile(r"^(\d*):(\d+)$")
# More shards than any token-shard repo holds (fineweb-edu 100B: 1,000): a bigger SPEC is a typo,
# and expanding 1:99999999999 into a list would take all memory first.
MAX_SHARDS = 100_000


def parse_spec(spec: Spec) -> list[int | str]:
    """Training shard numbers (or literal file names) from a SPEC, in the order given.

    Args:
        spec: ``"1:3"`` (1, 2, 3: inclusive), ``":3"`` (from 1), ``"7"``, ``"1,5,7:9"``, a file
            name, an int, a list of any of these, or ``None`` (no training shards).

    Raises:
        ConfigError: a range that runs backwards, more than ``MAX_SHARDS`` shards, or a piece
            that is neither a number nor a name.
    """
    if spec is None:
        return []
    if isinstance(spec, int):
        return [spec]
    pieces = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int | str] = []
    for piece in pieces:
        if isinstance(piece, int):
            out.append(piece)
            continue
        piece = str(piece).strip()
        if not piece:
            continue
        m = _RANGE.match(piece)
        if m:
            lo, hi = int(m.group(1) or 1), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"shard range {piece!r} runs backwards; write LOW:HIGH, e.g. 1:3")
            if len(out) + hi - lo + 1 > MAX_SHARDS:
                raise ConfigError(
                    f"shard range {piece!r} asks for {hi - lo + 1:,} shards; at most {MAX_SHARDS:,} in all "
                    "can be asked for (repos hold about 1,000): check the numbers"
                )
            out.extend(range(lo, hi + 1))
        elif piece.isdigit():
            out.append(int(piece))
        elif "." in piece and ":" not in piece:
            out.append(piece)
        else:
            raise ConfigError(f"shard spec piece {piece!r} is not a number, a range like 1:3, or a file name")
    return out


def shard_names(repo_id: str, shards: Spec = None, *, val: bool = False, pattern: str | None = None) -> list[str]:
    """The file names to fetch: the val shard first (if asked), then the training shards.

    Args:
        repo_id: the dataset repo.
        shards: a SPEC (see :func:`parse_spec`).
        val: include the validation shard (``split="val"``, index 0).
        pattern: file name pattern with ``{split}`` and ``{index}``; default from ``KNOWN_PATTERNS``.

    Raises:
        ConfigError: nothing asked for, or shard numbers for a repo with no known pattern.
    """
    check_repo_id(repo_id)
    picks = parse_spec(shards)
    pattern = pattern or KNOWN_PATTERNS.get(repo_id)
    if pattern is None and (val or any(isinstance(p, int) for p in picks)):
        raise ConfigError(
            f"{repo_id}: streamtok does not know how this repo names its shards; pass "
            "--pattern (e.g. 'shard_{split}_{index:06d}.bin') or full file names in --shards"
        )
    names = [pattern.format(split="val", index=0)] if val else []
    names += [p if isinstance(p, str) else pattern.format(split="train", index=p) for p in picks]
    if not names:
        raise ConfigError(f"{repo_id}: no shards asked for; pass --shards (e.g. 1:3) and/or --val")
    for name in names:
        check_file_name(repo_id, name)
    return list(dict.fromkeys(names))


def hub_lister(repo_id: str = DEFAULT_REPO, shards: Spec = None, **kw: Any) -> ShardLister:
    """A :class:`~streamtok.ShardLister` of a Hub dataset's shards, downloaded on first use.

    Also reachable as ``ShardLister.from_hub(repo_id, shards=...)``.

    Args:
        repo_id: e.g. ``karpathy/fineweb-edu-100B-gpt2-token-shards``.
        shards: which shards (``"1:3"``, a list of indices or file names); see
            ``streamtok download --help``.
        **kw: passed to :func:`download_shards` (``local_dir``, ``val``...).
    """
    return ShardLister(repo_id, resolver=lambda: download_shards(repo_id, shards=shards, **kw))


def check_repo_id(repo_id: str) -> None:
    """Refuse a repo id the Hub cannot have (``huggingface_hub``'s own rule), before any file is made.

    Args:
        repo_id: ``owner/name`` or ``name``.

    Raises:
        ConfigError: the id has characters, ``..`` or ``--`` the Hub does not allow.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ConfigError(
            f"{repo_id!r} is not a Hugging Face repo id; write OWNER/NAME with letters, digits, '-', '_' or '.'"
        ) from None


def check_file_name(repo_id: str, name: str) -> None:
    """Refuse a file name that could lead outside the download directory (``..``, absolute, empty parts).

    Args:
        repo_id: the repo (for the message).
        name: a file path inside the repo, ``/``-separated.

    Raises:
        ConfigError: the name is not a plain relative path.
    """
    parts = name.split("/")
    if "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(
            f"{repo_id}: shard name {name!r} is not a plain file path in the repo "
            "(no '..', '.', empty parts, leading '/' or backslashes)"
        )


def download_shards(
    repo_id: str = DEFAULT_REPO,
    shards: Spec = None,
    *,
    val: bool = False,
    local_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    pattern: str | None = None,
) -> list[str]:
    """Download shards of a Hugging Face dataset repo (once per node) and return their paths.

    Args:
        repo_id: the dataset repo.
        shards: a SPEC of training shards (see :func:`parse_spec`).
        val: also fetch the validation shard (returned first).
        local_dir: put the files in this directory; default: the Hugging Face cache.
        cache_dir: the Hugging Face cache to use instead of ``HF_HUB_CACHE``.
        revision: a branch, tag or commit; default ``main``.
        pattern: file naming of repos not in ``KNOWN_PATTERNS``.

    Raises:
        HubError: a file is missing from the repo, or cannot be had (offline and not cached).
        ShardFormatError: a file is there but truncated or not a shard.
    """
    names = shard_names(repo_id, shards, val=val, pattern=pattern)
    kw = dict(local_dir=local_dir, cache_dir=cache_dir, revision=revision)
    local_rank = _local_rank()
    if local_rank is None:
        paths = [_fetch(repo_id, n, i, len(names), local_files_only=False, **kw) for i, n in enumerate(names)]
        return _checked(paths)
    import torch.distributed as dist

    paths: list[str] = []
    error: StreamtokError | None = None
    if local_rank == 0:
        try:
            paths = [_fetch(repo_id, n, i, len(names), local_files_only=False, **kw) for i, n in enumerate(names)]
        except StreamtokError as exc:
            error = exc
    dist.barrier()  # the other ranks wait here until local rank 0 has every file
    if error is not None:
        raise error
    if local_rank != 0:
        paths = [_fetch(repo_id, n, i, len(names), local_files_only=True, **kw) for i, n in enumerate(names)]
    return _checked(paths)


def _checked(paths: list[str]) -> list[str]:
    # A header and size check per file (one small read): a truncated or foreign file left in
    # --dir fails here, naming the file, instead of in the middle of training.
    for path in paths:
        probe_shard(path)
    return paths


def _local_rank() -> int | None:
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return int(os.environ.get("LOCAL_RANK", dist.get_rank()))


def _fetch(repo_id: str, name: str, i: int, n: int, *, local_files_only: bool, local_dir: Any, cache_dir: Any, revision: str | None) -> str:
    from filelock import FileLock
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    root = os.fspath(local_dir or cache_dir or constants.HF_HUB_CACHE)
    # Names were checked by shard_names; flattening them keeps every lock in one folder of root.
    lock_path = os.path.join(root, ".streamtok-locks", repo_id.replace("/", "--"), name.replace("/", "--") + ".lock")
    try:
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    except OSError as exc:
        raise HubError(f"{root}: cannot create the download directory ({exc.strerror}); pass another --dir") from None
    print(f"[{i + 1}/{n}] {repo_id}/{name}", file=sys.stderr)
    try:
        with FileLock(lock_path):
            return hf_hub_download(
                repo_id, name, repo_type="dataset", revision=revision, local_dir=local_dir,
                cache_dir=cache_dir, local_files_only=local_files_only,
            )
    except LocalEntryNotFoundError as exc:
        where = f"in {local_dir}" if local_dir else f"in the Hugging Face cache {root}"
        if constants.HF_HUB_OFFLINE:
            why = "downloads are off (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to download it, or copy the cache from a machine that has it"
        elif local_files_only:
            why = "local rank 0 did not leave it there; check that all ranks use the same local_dir/cache_dir"
        else:
            cause = f"{type(exc.__cause__).__name__}: {_clip(str(exc.__cause__))}" if exc.__cause__ else _clip(str(exc))
            why = f"the Hub could not be reached ({cause}); check the network or HF_ENDPOINT"
        raise HubError(f"{repo_id}: {name} is not {where} and {why}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{repo_id}: no such dataset repo on the Hub, or it is private (log in with `hf auth login`)") from None
    except EntryNotFoundError:
        raise HubError(f"{repo_id}: the repo has no file {name}; check --shards (and --pattern for this repo)") from None
    except HfHubHTTPError as exc:
        raise HubError(f"{repo_id}: downloading {name} failed: {_clip(str(exc))}") from None
    except OSError as exc:
        raise HubError(f"{repo_id}: downloading {name} failed: {exc}") from None


def _clip(text: str, limit: int = 200) -> str:
    """The first line of ``text``, cut at a word boundary (marked ``...``) when over ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def register(subparsers: Any) -> None:
    """Add ``streamtok download`` to the ``streamtok`` command.

    Args:
        subparsers: from ``ArgumentParser.add_subparsers``.
    """
    p = subparsers.add_parser(
        "download", help="download token shards from a Hugging Face dataset repo",
        description=__doc__.split("\n\n")[1].replace("``", ""),  # re-wrapped to the terminal, words whole
    )
    p.add_argument("repo", nargs="?", default=DEFAULT_REPO, help=f"dataset repo (default {DEFAULT_REPO})")
    p.add_argument("--shards", metavar="SPEC", help="training shards: 3, 1:3 (inclusive), :10, 1,5,7:9 or file names")
    p.add_argument("--val", action="store_true", help="also the validation shard (…_val_000000.bin)")
    p.add_argument("--dir", metavar="DIR", help="put files here (default: the Hugging Face cache)")
    p.add_argument("--cache-dir", metavar="DIR", help="Hugging Face cache to use (default HF_HUB_CACHE)")
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    p.add_argument("--pattern", help="file names of other repos, e.g. 'shard_{split}_{index:06d}.bin'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``streamtok download``: print the local path of each shard, one per line.

    Args:
        args: the parsed command line.
    """
    paths = download_shards(
        args.repo, args.shards, val=args.val, local_dir=args.dir, cache_dir=args.cache_dir,
        revision=args.revision, pattern=args.pattern,
    )
    for path in paths:
        print(path)
    return 0
