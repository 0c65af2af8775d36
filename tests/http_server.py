"""A small HTTP server on 127.0.0.1 that serves files with byte ranges, for https:// and hf:// tests.

``start_http(root)`` serves ``root``'s files at ``/<relative path>``: GET (with a ``Range``:
206 and ``Content-Range``), HEAD, an ``ETag`` per file version. It also answers the two Hub
requests ``hf://`` needs, for datasets under ``root/hub/OWNER/NAME/``:
``/api/datasets/OWNER/NAME/tree/REV[/PATH]`` (the JSON file listing of ``huggingface_hub``'s
``list_repo_tree``) and ``/datasets/OWNER/NAME/resolve/REV/PATH`` (the file, with the Hub's
headers for a file not in LFS: ``ETag`` its blob id, the tree's oid, and ``X-Repo-Commit``).
Files in a folder named ``lfs/`` are listed as LFS files (their sha256 in the tree's ``lfs``);
their ``resolve`` answers carry the blob-id ETag still, as a CDN's ETag is not the Hub's.
Requests are counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


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

        def log_message(self, *args: object) -> None:
            pass

        def _file(self, path: str) -> Path | None:
            m = re.match(r"^/datasets/([^/]+)/([^/]+)/resolve/[^/]+/(.+)$", path)
            rel = f"hub/{m.group(1)}/{m.group(2)}/{m.group(3)}" if m else path.lstrip("/")
            p = (state["root"] / rel).resolve()
            return p if p.is_file() and state["root"] in p.parents else None

        def _tree(self, path: str) -> bool:
            m = re.match(r"^/api/datasets/([^/]+)/([^/]+)/tree/[^/]+/?(.*)$", path.split("?")[0])
            if not m:
                return False
            base = state["root"] / "hub" / m.group(1) / m.group(2)
            sub = base / m.group(3)
            items = []
            if sub.is_dir():
                for p in sorted(sub.iterdir()):
                    rel = p.relative_to(base).as_posix()
                    if p.is_dir():
                        items.append({"type": "directory", "oid": "0" * 40, "path": rel})
                    else:
                        item = {"type": "file", "oid": hashlib.sha1(p.read_bytes()).hexdigest(), "size": p.stat().st_size, "path": rel}
                        if "lfs" in p.relative_to(base).parts[:-1]:  # a folder named lfs/: its files are in LFS
                            item["lfs"] = {"oid": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size,
                                           "pointerSize": 134}
                        items.append(item)
            body = json.dumps(items).encode()
            self.send_response(200 if sub.is_dir() else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def _serve(self, head: bool) -> None:
            path = self.path.split("?")[0]
            state["log"].append((self.command, path, self.headers.get("Range")))
            if not head and self._tree(path):
                return
            f = self._file(path)
            if f is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
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
            if "/resolve/" in path:
                self.send_header("X-Repo-Commit", "c" * 40)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
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
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return HttpServer(state["root"], server, state["log"])


@pytest.fixture
def http_root(tmp_path) -> Iterator[HttpServer]:
    """A server over a fresh ``tmp_path / "www"``."""
    (tmp_path / "www").mkdir()
    server = start_http(tmp_path / "www")
    yield server
    server.stop()
