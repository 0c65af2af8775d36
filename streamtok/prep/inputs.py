"""The inputs of ``streamtok tokenize``: local files, stdin, and Hugging Face Hub datasets.

``hf://datasets/OWNER/NAME[@REVISION][/GLOB]`` names the files of a Hub dataset repo matching
GLOB (default: its ``*.parquet`` files, else its ``*.jsonl`` files), taken through
``huggingface_hub.snapshot_download`` with ``allow_patterns=GLOB``: files already in the Hub
cache are used as they are (with ``HF_HUB_OFFLINE=1`` only the cache is read), others are
downloaded once into it. Each file is then read as a stream -- parquet in row batches, text in
256 KiB blocks -- so nothing is converted or held whole in memory (fineweb-edu's parquet files
are ~2 GB each). The manifest records each file as ``hf://datasets/REPO@COMMIT/FILE`` with its
size, so a resume against another revision is refused.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, HubError
from ..shards import natural_key
from .manifest import source_entries
from .sources import STDIN, ReadOptions, input_format

HF_PREFIX = "hf://datasets/"
_DEFAULT_GLOBS = ("**/*.parquet", "**/*.jsonl")


@dataclass(frozen=True)
class Input:
    """One input: the local path to read and its identity in the manifest."""

    path: str
    entry: dict[str, Any]


def resolve_inputs(inputs: list[str], opts: ReadOptions) -> list[Input]:
    """Expand ``hf://datasets/...`` specs to their cached files; keep local paths and stdin.

    Args:
        inputs: as given on the command line.
        opts: how inputs are read (their format).

    Raises:
        ConfigError: a malformed ``hf://`` spec; HubError: the repo or its files cannot be had.
    """
    out: list[Input] = []
    for spec in inputs:
        if spec.startswith("hf://"):
            out.extend(hub_inputs(spec, opts))
        elif spec == STDIN or not os.path.isfile(spec):
            out.append(Input(spec, {"path": spec, "format": input_format(spec, opts.fmt), "nbytes": None, "mtime_ns": None}))
        else:
            out.append(Input(spec, source_entries([spec], opts.fmt)[0]))
    return out


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``(repo_id, revision, glob)`` of ``hf://datasets/OWNER/NAME[@REV][/GLOB]``.

    Args:
        spec: the input spec.
    """
    m = re.fullmatch(r"hf://datasets/([^/@]+/[^/@]+)(?:@([^/]+))?(?:/(.+))?", spec)
    if m is None:
        raise ConfigError(f"{spec}: write hf://datasets/OWNER/NAME[@REVISION][/GLOB], e.g. hf://datasets/HuggingFaceFW/fineweb-edu/sample/10BT/*.parquet")
    repo, rev, glob = m.groups()
    from .hub import check_repo_id

    check_repo_id(repo)
    if glob is not None and (glob.startswith("/") or ".." in glob.split("/")):
        raise ConfigError(f"{spec}: the file pattern must stay inside the repo (no '..')")
    return repo, rev, glob


def hub_inputs(spec: str, opts: ReadOptions) -> list[Input]:
    """The files of a Hub dataset matching the spec's glob, in natural order, from the Hub cache.

    Args:
        spec: ``hf://datasets/OWNER/NAME[@REV][/GLOB]``.
        opts: how inputs are read.
    """
    repo, rev, glob = parse_hf_spec(spec)
    for pattern in (glob,) if glob else _DEFAULT_GLOBS:
        root = _snapshot(spec, repo, rev, pattern)
        names = sorted(
            (os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/") for d, _, fs in os.walk(root) for f in fs),
            key=natural_key,
        )
        names = [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n, pattern.replace("**/", ""))]
        if names:
            break
    else:
        raise HubError(f"{spec}: no files match {glob or ' or '.join(_DEFAULT_GLOBS)} in the repo (or in the Hub cache, offline)")
    commit = os.path.basename(root)
    out = []
    for name in names:
        path = os.path.join(root, name)
        entry = {
            "path": f"hf://datasets/{repo}@{commit}/{name}", "format": input_format(name, opts.fmt),
            "nbytes": os.path.getsize(path), "mtime_ns": None,
        }
        out.append(Input(path, entry))
    return out


def _snapshot(spec: str, repo: str, rev: str | None, pattern: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return snapshot_download(repo, repo_type="dataset", revision=rev, allow_patterns=[pattern])
    except LocalEntryNotFoundError:
        raise HubError(
            f"{spec}: not in the Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE or no network); "
            "run once online, or copy the cache from a machine that has it"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(f"{spec}: no such dataset repo on the Hub, or it is private (log in with `hf auth login`)") from None
    except (HfHubHTTPError, OSError) as exc:
        raise HubError(f"{spec}: {str(exc).splitlines()[0][:200]}") from None
