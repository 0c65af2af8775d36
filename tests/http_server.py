"""A small HTTP server on 127.0.0.1 that serves files with byte ranges, and a local Hugging Face Hub.

``start_http(root)`` serves ``root``'s files at ``/<relative path>``: GET (with a ``Range``:
206 and ``Content-Range``), HEAD, an ``ETag`` per file version. It is also a Hub for
``huggingface_hub`` (``HF_ENDPOINT`` set to its :attr:`HttpServer.url`), over dataset repos in
``root/hub/OWNER/NAME/`` and model repos in ``root/hub-models/OWNER/NAME/`` (see
:func:`hub_repo`). A repo's folder is its commit :data:`HUB_COMMIT`, which every branch names by
default; :func:`hub_repo` with ``commit=SHA`` adds a further commit (its files in the repo's
``.commits/SHA/``) and :func:`hub_branch` moves a branch to it (``.refs/BRANCH``), as a push does,
while a loader runs if a test likes. Each request below answers for the commit its revision
names (a 40-hex sha, or a branch at the commit it names at that moment); a sha the repo does
not hold is a 404 with ``X-Error-Code: RevisionNotFound``:

- ``/api/{datasets,models}/OWNER/NAME[/revision/REV]``: the repo info (``sha``, ``siblings``)
  that ``snapshot_download`` asks first;
- ``/api/{datasets,models}/OWNER/NAME/tree/REV[/PATH][?recursive=true]``: the JSON listing of
  ``list_repo_tree`` (``hf://`` sources, ``snapshot_download``);
- ``/datasets/OWNER/NAME/resolve/REV/PATH`` and ``/OWNER/NAME/resolve/REV/PATH`` (a model): the
  file, with the headers ``hf_hub_download``'s HEAD checks: ``X-Repo-Commit``,
  ``X-Linked-Etag`` (the sha256, as the Hub gives for LFS files), ``X-Linked-Size`` and
  ``Content-Length``.

A repo that is not there is a 404 with the Hub's ``X-Error-Code: RepoNotFound``; a repo holding a
file ``.gated`` answers its files as a gated repo does to a user who has not accepted its terms
(403, ``X-Error-Code: GatedRepo``). A file that is not in LFS answers ``resolve`` with its blob id
(the tree's oid) as its ``ETag``, as the Hub does; files in a folder named ``lfs/`` are listed as
LFS files (their sha256 in the tree's ``lfs``, and in ``X-Linked-Etag``), their ``ETag`` still the
blob id, as a CDN's ETag is not the Hub's. Requests are logged as (method, path, Range).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
HUB_COMMIT = "5eedc0de" * 5  # the default commit of every repo of the local Hub (its folder's files)
_KIND_DIR = {"datasets": "hub", "models": "hub-models"}
_COMMITS, _REFS = ".commits", ".refs"  # in a repo's folder: its further commits, and its moved branches
_SHA = re.compile(r"[0-9a-f]{40}")
_API = re.compile(r"^/api/(datasets|models)/([^/]+)/([^/]+)(?:/revision/([^/]+))?/?$")
_TREE = re.compile(r"^/api/(datasets|models)/([^/]+)/([^/]+)/tree/([^/]+)/?(.*)$")
_RESOLVE = re.compile(r"^/(?:(datasets)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")


def hub_repo(root: str | os.PathLike, repo: str, files: dict[str, bytes], kind: str = "datasets",
             commit: str = HUB_COMMIT) -> Path:
    """Lay ``files`` ({path in repo: bytes}) out as commit ``commit`` of repo ``repo`` of the local
    Hub served from ``root``; return the commit's folder. A commit other than :data:`HUB_COMMIT`
    (40 hex digits) holds only these files, and no branch names it until :func:`hub_branch`."""
    base = Path(root) / _KIND_DIR[kind] / repo
    if commit != HUB_COMMIT:
        assert _SHA.fullmatch(commit), commit
        base.mkdir(parents=True, exist_ok=True)
        base = base / _COMMITS / commit
    for name, data in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    return base


def hub_branch(root: str | os.PathLike, repo: str, commit: str, branch: str = "main", kind: str = "datasets") -> None:
    """Move ``branch`` of ``repo`` to ``commit`` (a push), atomically: a request sees the old commit or the new."""
    refs = Path(root) / _KIND_DIR[kind] / repo / _REFS
    refs.mkdir(parents=True, exist_ok=True)
    (refs / f".{branch}.tmp").write_text(commit)
    os.replace(refs / f".{branch}.tmp", refs / branch)


def _commit(base: Path, revision: str) -> tuple[str, Path] | None:
    """``(sha, folder of its files)`` of a revision of the repo at ``base``; ``None``: no such commit."""
    revision = urllib.parse.unquote(revision)
    if not _SHA.fullmatch(revision):  # a branch (or tag): the commit it names now, by default HUB_COMMIT
        ref = base / _REFS / revision
        revision = ref.read_text().strip() if "/" not in revision and ref.is_file() else HUB_COMMIT
    folder = base if revision == HUB_COMMIT else base / _COMMITS / revision
    return (revision, folder) if folder.is_dir() else None


def _listed(folder: Path, paths: Iterator[Path]) -> list[Path]:
    """``paths`` in order, without the repo folder's own ``.commits/`` and ``.refs/``."""
    return sorted(p for p in paths if p.relative_to(folder).parts[0] not in (_COMMITS, _REFS))


@dataclass
class HttpServer:
    root: Path
    server: ThreadingHTTPServer
    log: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(state: dict) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: without it each read waits ~40 ms for an ACK

        def log_message(self, *args: object) -> None:
            pass

        def _repo(self, kind: str | None, owner: str, name: str) -> Path:
            return state["root"] / _KIND_DIR[kind or "models"] / owner / name

        def _file(self, path: str, folder: Path | None) -> Path | None:
            """The file a path names: in a commit's ``folder`` for a Hub ``resolve``, else under the root."""
            p = (folder / _RESOLVE.match(path).group(5) if folder else state["root"] / path.lstrip("/")).resolve()
            return p if p.is_file() and state["root"] in p.parents else None

        def _missing(self, code: str | None = None) -> None:
            self.send_response(404)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _info(self, path: str) -> bool:
            """The repo info of ``repo_info``/``snapshot_download``: its commit and every file."""
            m = _API.match(path)
            if not m:
                return False
            base = self._repo(*m.groups()[:3])
            if not base.is_dir():
                self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return True
            at = _commit(base, m.group(4) or "main")
            if at is None:
                self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                return True
            files = [p.relative_to(at[1]).as_posix() for p in _listed(at[1], at[1].rglob("*")) if p.is_file()]
            self._json(200, {"id": f"{m.group(2)}/{m.group(3)}", "sha": at[0], "private": False,
                             "siblings": [{"rfilename": f} for f in files]})
            return True

        def _tree(self, path: str, query: str) -> bool:
            m = _TREE.match(path)
            if not m:
                return False
            repo = self._repo(m.group(1), m.group(2), m.group(3))
            at = _commit(repo, m.group(4)) if repo.is_dir() else (HUB_COMMIT, repo)
            if at is None:
                self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                return True
            base = at[1]
            sub = base / m.group(5)
            recursive = re.search(r"(^|&)recursive=(true|True|1)(&|$)", query) is not None
            items = []
            if sub.is_dir():
                for p in _listed(base, sub.rglob("*") if recursive else sub.iterdir()):
                    rel = p.relative_to(base).as_posix()
                    if p.is_dir():
                        items.append({"type": "directory", "oid": "0" * 40, "path": rel})
                    else:
                        item = {"type": "file", "oid": hashlib.sha1(p.read_bytes()).hexdigest(), "size": p.stat().st_size, "path": rel}
                        if "lfs" in p.relative_to(base).parts[:-1]:  # a folder named lfs/: its files are in LFS
                            item["lfs"] = {"oid": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size,
                                           "pointerSize": 134}
                        items.append(item)
            self._json(200 if sub.is_dir() else 404, items)
            return True

        def _serve(self, head: bool) -> None:
            path, _, query = self.path.partition("?")
            state["log"].append((self.command, path, self.headers.get("Range")))
            if not head and (self._info(path) or self._tree(path, query)):
                return
            m = _RESOLVE.match(path)
            repo = self._repo(m.group(1), m.group(2), m.group(3)) if m else None
            if repo is not None and (repo / ".gated").exists():
                self.send_response(403)
                self.send_header("X-Error-Code", "GatedRepo")
                self.send_header("X-Error-Message", "Access to this repo is restricted: accept its terms on its page.")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            hub = repo is not None and repo.is_dir()  # a Hub resolve: answered at the commit its revision names
            at = _commit(repo, m.group(4)) if hub else None
            if hub and at is None:
                return self._missing("RevisionNotFound")
            commit, f = (at[0] if at else None), self._file(path, at[1] if at else None)
            if f is None:
                return self._missing()
            st = f.stat()
            etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
            if "/resolve/" in path:  # as the Hub answers a file that is not in LFS: its blob id (the tree's oid)
                etag = f'"{hashlib.sha1(f.read_bytes()).hexdigest()}"'
            if self.headers.get("If-Match") not in (None, "*", etag):
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = f.read_bytes()
            m = _RANGE.match(self.headers.get("Range") or "")
            status, lo, hi = 200, 0, len(data)
            if m:
                lo = int(m.group(1))
                hi = min(len(data), int(m.group(2)) + 1) if m.group(2) else len(data)
                status = 206
            self.send_response(status)
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
            if commit:  # what hf_hub_download's HEAD reads: the commit, and an LFS file's sha256 and size
                self.send_header("X-Repo-Commit", commit)
                if "lfs" in Path(path).parts[:-1]:
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(data)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {lo}-{hi - 1}/{len(data)}")
            self.send_header("Content-Length", str(hi - lo))
            self.end_headers()
            if not head:
                self.wfile.write(data[lo:hi])

        def do_GET(self) -> None:  # noqa: N802
            self._serve(False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(True)

    return Handler


def start_http(root: str | os.PathLike) -> HttpServer:
    """Serve ``root`` on a free port of 127.0.0.1 (see the module docstring)."""
    state = {"root": Path(root).resolve(), "log": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()  # stop() waits one poll
    return HttpServer(state["root"], server, state["log"])


@pytest.fixture
def http_root(tmp_path) -> Iterator[HttpServer]:
    """A server over a fresh ``tmp_path / "www"``."""
    (tmp_path / "www").mkdir()
    server = start_http(tmp_path / "www")
    yield server
    server.stop()
