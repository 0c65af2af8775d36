"""``hf://`` URLs: shards in a Hugging Face repo, from the local Hub cache when there, else by range.

``hf://datasets/OWNER/NAME[@REVISION]/PATH`` names a file, a folder (``PATH/``) or a glob of
files in a dataset repo (``models/`` and ``spaces/`` work too). Listing asks the Hub's tree API
(``huggingface_hub.HfApi.list_repo_tree``: one request per 1000 files, with sizes); a file
that the local Hub cache already holds (``huggingface_hub``'s cache, as ``streamtok download``
and ``hf_hub_download`` fill it) is read from there as a local file, memory-mapped; any other
is read with ranged GETs of ``ENDPOINT/datasets/OWNER/NAME/resolve/REVISION/PATH`` (obstore's
HTTP client; the Hub redirects them to its CDN). With ``HF_HUB_OFFLINE=1`` only the cache is
used. Options: ``storage_options={"endpoint": ..., "token": ...}``, else ``HF_ENDPOINT``,
``HF_TOKEN`` (or the token ``huggingface-cli login`` saved), ``HF_HUB_CACHE``.

Versions: each file's version is the Hub's own, as ``huggingface_hub`` reads it: its git
blob id, or an LFS file's sha256 (the ``X-Linked-Etag`` of its metadata). The tree listing
gives it with the size; a file named alone gets it from ``get_hf_file_metadata`` (a HEAD that
is not followed to the CDN). It keys the metadata cache, the block cache and the document
indexes, so a same-size change on the Hub is never served from a cache; and the Hub answers
a file that is not in LFS with that ETag, so each ranged GET of it is checked against it: a
change while a loader reads is an :class:`~streamtok.errors.ObjectChangedError`, as for S3.

Commits: a source at a branch or tag (``main`` by default) is read at the commit it names
when the loader is built (:func:`pin`: one ``repo_info`` request per repo), so its URLs are
``hf://datasets/OWNER/NAME@<sha>/PATH`` from then on (a loader's state too: its origin names the
source at the commit, :func:`pin_source`) and every read is of
that immutable commit. That is what covers an LFS file, whose bytes come from a CDN whose
ETags are not the Hub's (no ``If-Match`` is sent to the Hub, which would forward it there):
a branch moved under a running loader cannot mix two versions of it. Its version is still
checked when it is opened. Offline (``HF_HUB_OFFLINE=1``) the cache's own ref is used.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob as globlib
import os
import posixpath
import time
from collections.abc import Callable
from typing import Any

from ..errors import HubError, ShardNotFoundError
from . import urls
from .options import StorageOptions, redact, remember_secrets
from .refs import ObjectRef, normalize_etag

SHARD_SUFFIXES = (".bin", ".npy")


def split_root(root: str) -> tuple[str, str, str]:
    """``(repo_type, repo_id, revision)`` of an hf URL's root ``datasets/OWNER/NAME[@REV]``."""
    kind, owner, name = root.split("/", 2)
    name, _, revision = name.partition("@")
    return kind[:-1], f"{owner}/{name}", revision or "main"


def _endpoint(options: StorageOptions) -> str:
    return str(options.values.get("endpoint") or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _token(options: StorageOptions) -> str | None:
    token = options.values.get("token") or options.values.get("hf_token") or os.environ.get("HF_TOKEN")
    if token is None:
        try:
            from huggingface_hub import get_token

            token = get_token()
        except Exception:  # noqa: BLE001 - no saved login is fine
            token = None
    if token:
        remember_secrets({"token": token})
    return token or None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_store(url: urls.Url, options: StorageOptions, retry: dict[str, Any]) -> Any:
    """An obstore HTTP store rooted at the repo's ``resolve/REVISION/`` URL."""
    from obstore.store import HTTPStore

    kind, repo_id, revision = split_root(url.root)
    client = options.client_options()
    base = _endpoint(options)
    if base.startswith("http://"):
        client["allow_http"] = True
    token = _token(options)
    if token:
        client["default_headers"] = {"Authorization": f"Bearer {token}"}
    prefix = "" if kind == "model" else f"{kind}s/"
    return HTTPStore.from_url(f"{base}/{prefix}{repo_id}/resolve/{revision}", client_options=client, retry_config=retry)


def _cached(repo_id: str, kind: str, revision: str, path: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, path, cache_dir=os.environ.get("HF_HUB_CACHE"), revision=revision, repo_type=kind)
    return found if isinstance(found, str) and os.path.isfile(found) else None


def _cached_files(repo_id: str, kind: str, revision: str) -> list[str]:
    """Repo paths of the files of a cached snapshot (offline)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, repo_type=kind, revision=revision, local_files_only=True,
                                   cache_dir=os.environ.get("HF_HUB_CACHE"))
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises several kinds here
        raise ShardNotFoundError(f"hf://{kind}s/{repo_id}@{revision}: not in the local Hub cache and HF_HUB_OFFLINE is set ({type(exc).__name__})") from None
    return [p.relative_to(folder).as_posix() for p in __import__("pathlib").Path(folder).rglob("*") if p.is_file()]


def _version(item: Any) -> tuple[str | None, bool]:
    """``(the Hub's ETag of a listed file, whether its reads carry it)``: an LFS file's sha256
    (its bytes come from a CDN), else its git blob id (the Hub answers with it)."""
    lfs = getattr(item, "lfs", None)
    sha = getattr(lfs, "sha256", None) if lfs is not None else None
    if isinstance(sha, str) and sha:
        return normalize_etag(sha), False
    blob = getattr(item, "blob_id", None)
    return (normalize_etag(blob), True) if isinstance(blob, str) and blob else (None, True)


def _remote_files(repo_id: str, kind: str, revision: str, folder: str, recursive: bool,
                  options: StorageOptions) -> dict[str, tuple[int, str | None, bool]]:
    """``{path: (size, version, version in reads)}`` of the repo's files under ``folder``."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=_endpoint(options), token=_token(options))
    try:
        items = api.list_repo_tree(repo_id, path_in_repo=folder or None, repo_type=kind, revision=revision, recursive=recursive)
        return {i.path: (int(i.size), *_version(i)) for i in items
                if getattr(i, "size", None) is not None and not hasattr(i, "tree_id")}
    except Exception as exc:  # noqa: BLE001
        raise HubError(f"hf://{kind}s/{repo_id}@{revision}/{folder}: cannot list the repo ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


# (endpoint, kind, repo, revision) -> (commit, when asked): a list of many URLs of one repo asks
# once; a loader built a minute later sees where the branch is then.
_COMMITS: dict[tuple[str, str, str, str], tuple[str, float]] = {}
COMMIT_TTL_S = 60.0


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def pin(u: urls.Url, options: StorageOptions) -> urls.Url:
    """``u`` at the commit its revision names now (``@main`` -> ``@<sha>``), asked once per repo
    within :data:`COMMIT_TTL_S`: every listing, ranged read and cached file of a loader is then of one
    immutable commit, so a branch that moves under a running loader cannot mix two versions
    (an LFS file's reads come from a CDN whose ETags are not the Hub's). Offline, or already a
    commit: ``u`` unchanged.

    Raises:
        ShardNotFoundError: no such repo or revision; HubError: the Hub could not be asked.
    """
    kind, repo_id, revision = split_root(u.root)
    if _offline() or _is_commit(revision):
        return u
    key = (_endpoint(options), kind, repo_id, revision)
    if key not in _COMMITS or time.monotonic() - _COMMITS[key][1] > COMMIT_TTL_S:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            sha = HfApi(endpoint=key[0], token=_token(options)).repo_info(repo_id, repo_type=kind, revision=revision).sha
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise ShardNotFoundError(f"hf://{kind}s/{repo_id}@{revision}: no such repo or revision on the Hub ({type(exc).__name__})") from None
        except Exception as exc:  # noqa: BLE001 - network and HTTP errors of several kinds
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise HubError(redact(f"hf://{kind}s/{repo_id}@{revision}: cannot ask the Hub for its commit ({type(exc).__name__}: {first})")) from None
        if not (isinstance(sha, str) and _is_commit(sha)):
            raise HubError(f"hf://{kind}s/{repo_id}@{revision}: the Hub gave no commit id ({sha!r})")
        _COMMITS[key] = (sha, time.monotonic())
    return dataclasses.replace(u, root=f"{u.root.partition('@')[0]}@{_COMMITS[key][0]}")


def pin_source(source: str, options: StorageOptions) -> str:
    """An ``hf://`` source at the commit its revision names now (:func:`pin`), as a source string:
    the loader lists it and records it in its states, so a run resumed from a state reads that
    commit, wherever the branch has moved since. Offline, or already a commit: ``source``."""
    u = urls.parse(source)
    pinned = pin(u, options)
    return source if pinned is u else str(pinned)


def list_hub(source: str, options: StorageOptions, sort_key: Callable[[str], object]) -> tuple[list[str], dict[str, ObjectRef]]:
    """``(shard paths in order, objects seen)`` for an ``hf://`` source: cached files as local
    paths, the others as URLs at the commit the source's revision names now (:func:`pin`; see
    the module docstring)."""
    u = pin(urls.parse(source), options)
    kind, repo_id, revision = split_root(u.root)
    key = u.key
    pattern = key if globlib.has_magic(key) else None
    folder = key[: key.rfind("/", 0, min(i for i, c in enumerate(key) if c in "*?[")) + 1] if pattern else key
    single = pattern is None and key and not key.endswith("/")
    if _offline():
        files = {p: (-1, None, True) for p in _cached_files(repo_id, kind, revision)}
    elif single:
        files = {}
    else:
        files = _remote_files(repo_id, kind, revision, folder.rstrip("/"), bool(pattern), options)
    if single:
        names = [key] if key in files or not _offline() else []
        if not names:
            raise ShardNotFoundError(f"{source}: not in the local Hub cache and HF_HUB_OFFLINE is set")
    elif pattern:
        names = [p for p in files if p.count("/") == pattern.count("/") and fnmatch.fnmatchcase(p, pattern)]
    else:
        names = [p for p in files if posixpath.dirname(p) == folder.rstrip("/") and p.endswith(SHARD_SUFFIXES)
                 and not posixpath.basename(p).startswith(".")]
    if not names:
        raise ShardNotFoundError(f"{source}: no shard files (*.bin or *.npy) match in the repo")
    paths, known = [], {}
    for name in sorted(names, key=sort_key):
        local = _cached(repo_id, kind, revision, name)
        if local is not None:
            paths.append(local)
            continue
        if _offline():
            raise ShardNotFoundError(f"{u.child(name)}: not in the local Hub cache and HF_HUB_OFFLINE is set")
        url = u.child(name)
        paths.append(url)
        size, version, in_reads = files.get(name, (-1, None, True))
        if size >= 0:
            known[url] = ObjectRef(url, size, version, in_reads)
        if files and not single and not _offline():  # listed: the tokenize manifest beside it, or None (absent)
            beside = posixpath.join(posixpath.dirname(name), "manifest.json")
            m_size, m_version, m_in_reads = files.get(beside, (-1, None, True))
            known[u.child(beside)] = ObjectRef(u.child(beside), m_size, m_version, m_in_reads) if m_size >= 0 else None
    return paths, known


def file_ref(url: str, options: StorageOptions) -> ObjectRef:
    """The size and Hub version of the file at an ``hf://`` URL (``huggingface_hub``'s
    ``get_hf_file_metadata``: one HEAD of its ``resolve`` URL, not followed to the CDN).

    Raises:
        ShardNotFoundError: no such file (or repo, or revision).
        HubError: the Hub could not be asked.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    u = urls.parse(url)
    kind, repo_id, revision = split_root(u.root)
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo_id, u.key, repo_type=kind, revision=revision, endpoint=_endpoint(options)),
                                    token=_token(options) or False)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ShardNotFoundError(f"{url}: no such file on the Hub ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors of several kinds
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise HubError(redact(f"{url}: cannot ask the Hub for the file's metadata ({type(exc).__name__}: {first})")) from None
    if meta.size is None:
        raise HubError(f"{url}: the Hub gave no size for the file")
    version = normalize_etag(meta.etag)
    # An LFS file's version is its sha256 (64 hex digits; a git blob id has 40): its reads come from a CDN.
    lfs = version is not None and len(version.strip('"')) == 64
    return ObjectRef(url, int(meta.size), version, not lfs)
