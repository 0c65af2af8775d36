"""A real S3 API on 127.0.0.1 for tests and benchmarks, with a proxy that injects latency and faults.

``start_s3()`` starts moto's ``ThreadedMotoServer`` on a free loopback port and a small HTTP
proxy in front of it (:class:`FaultProxy`). Clients talk to the proxy's endpoint; the proxy
forwards each request to moto and, on the way back, can:

- wait ``latency_s`` before forwarding (per request: concurrent requests overlap, as they
  would against a real store 30 ms away);
- cap the bandwidth of all response bodies together (``bandwidth_bps``, a token bucket);
- inject a fault on the next matching requests: ``"500"``, ``"503"``, ``"slowdown"`` (503 with
  S3's ``SlowDown`` code, what S3 answers when throttling), ``"reset"`` (the connection is
  reset: TCP RST, no response), ``"short"`` (the headers promise the whole body, half of it
  is sent and the connection closed), ``"timeout"`` (nothing is sent for ``hang_s`` seconds);
- count requests, GETs with a ``Range``, body bytes sent and faults injected, and keep a log
  of ``(method, path, range)`` per request.

Nothing leaves the loopback. Uploads (``upload``/``upload_dir``) go to moto directly, so
they are neither delayed nor counted.

Plain functions for benchmarks::

    with start_s3(latency_s=0.03, bandwidth_bps=200e6) as s3:
        s3.create_bucket("data")
        s3.upload_dir("shards/", "data", "fineweb/")
        os.environ.update(s3.env())  # AWS_ENDPOINT_URL (the proxy), credentials, AWS_ALLOW_HTTP
        ...

In tests: ``from s3_server import s3, s3_bucket  # noqa: F401`` makes the fixtures available
(``s3`` is the session's server; ``s3_bucket`` a fresh bucket per test, with the proxy's
faults, latency and counters reset). Both skip with the reason when ``moto[server]`` is not
installed (``pip install -e .[dev]`` installs it).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REGION = "us-east-1"
ACCESS_KEY = "streamtok-test-key"
# A planted secret: tests grep states, manifests, metrics and messages for it.
SECRET_KEY = "streamtok-SECRET-do-not-leak-7f3a9c"
FAULTS = ("500", "503", "slowdown", "reset", "short", "timeout")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Fault:
    """``kind`` on the next ``times`` requests whose method is ``method`` and path holds ``match``."""

    kind: str
    times: int = 1
    match: str = ""
    method: str | None = "GET"
    predicate: Callable[[str, str, dict[str, str]], bool] | None = None

    def applies(self, method: str, path: str, headers: dict[str, str]) -> bool:
        if self.times <= 0 or (self.method is not None and method != self.method) or self.match not in path:
            return False
        return self.predicate is None or self.predicate(method, path, headers)


@dataclass
class Counters:
    """What the proxy saw (reset with :meth:`FaultProxy.reset`)."""

    requests: int = 0
    gets: int = 0
    range_gets: int = 0
    heads: int = 0
    lists: int = 0
    body_bytes: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    max_in_flight: int = 0


class _Bucket:
    """A token bucket shared by every connection: ``rate`` bytes per second."""

    def __init__(self, rate: float):
        self.rate = rate
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up (a timeout, a reset) is expected here, not a traceback on stderr."""

    daemon_threads = True
    request_queue_size = 1024  # many clients connect at once (default 5)

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, OSError)):
            super().handle_error(request, client_address)


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of ``upstream`` (``host:port``).

    Args:
        upstream: where requests go (moto's server).
        latency_s: added before forwarding each request.
        bandwidth_bps: cap on response body bytes per second, all connections together.
        hang_s: how long a ``"timeout"`` fault keeps the client waiting before closing.
        memory: answer ranged GETs (and HEADs) from a copy of each object the proxy fetched
            whole once (for benchmarks: moto's per-request cost then stops bounding requests/s). Writes
            through the proxy drop the copy; uploads straight to moto do not, so leave it off
            where objects change.
    """

    def __init__(self, upstream: str, *, latency_s: float = 0.0, bandwidth_bps: float | None = None, hang_s: float = 3.0,
                 memory: bool = False):
        self.upstream = upstream
        self.memory = memory
        self._memory: dict[str, tuple[list, bytes]] = {}
        self.latency_s = latency_s
        self.bandwidth_bps = bandwidth_bps
        self.hang_s = hang_s
        self.counters = Counters()
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._bucket = _Bucket(bandwidth_bps) if bandwidth_bps else None
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set_bandwidth(self, bandwidth_bps: float | None) -> None:
        self.bandwidth_bps = bandwidth_bps
        self._bucket = _Bucket(bandwidth_bps) if bandwidth_bps else None

    def inject(self, kind: str, times: int = 1, *, match: str = "", method: str | None = "GET",
               predicate: Callable[[str, str, dict[str, str]], bool] | None = None) -> Fault:
        """Make the next ``times`` matching requests fail with ``kind`` (one of :data:`FAULTS`)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        fault = Fault(kind, times, match, method, predicate)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """No faults, no latency or bandwidth cap, no copies (``memory`` off), counters at zero."""
        self.clear_faults()
        self.memory = False
        with self._lock:
            self._memory.clear()
        self.latency_s = 0.0
        self.set_bandwidth(None)
        with self._lock:
            self.counters = Counters()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take_fault(self, method: str, path: str, headers: dict[str, str]) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies(method, path, headers):
                    fault.times -= 1
                    self.counters.faults[fault.kind] = self.counters.faults.get(fault.kind, 0) + 1
                    return fault.kind
        return None

    def _count(self, method: str, path: str, rng: str | None) -> None:
        with self._lock:
            c = self.counters
            c.requests += 1
            c.gets += method == "GET"
            c.range_gets += method == "GET" and rng is not None
            c.heads += method == "HEAD"
            c.lists += method == "GET" and "list-type=" in path
            c.log.append((method, path, rng))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream_conn: http.client.HTTPConnection | None = None

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _upstream(self) -> http.client.HTTPConnection:
                if self.upstream_conn is None:
                    host, port = proxy.upstream.rsplit(":", 1)
                    self.upstream_conn = http.client.HTTPConnection(host, int(port), timeout=60)
                return self.upstream_conn

            def _error(self, status: int, code: str) -> None:
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>injected by the test proxy</Message></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.close()

            def _forward(self) -> None:
                method, path = self.command, self.path
                headers = {k: v for k, v in self.headers.items()}
                body = self._body()
                rng = self.headers.get("Range")
                proxy._count(method, path, rng)
                with proxy._lock:
                    proxy._in_flight += 1
                    proxy.counters.max_in_flight = max(proxy.counters.max_in_flight, proxy._in_flight)
                try:
                    if proxy.latency_s:
                        time.sleep(proxy.latency_s)
                    fault = proxy._take_fault(method, path, headers)
                    if fault in ("500", "503", "slowdown"):
                        status, code = {"500": (500, "InternalError"), "503": (503, "ServiceUnavailable"),
                                        "slowdown": (503, "SlowDown")}[fault]
                        return self._error(status, code)
                    if fault == "reset":
                        return self._reset()
                    if fault == "timeout":
                        time.sleep(proxy.hang_s)
                        return self._reset()
                    if method in ("PUT", "DELETE", "POST"):
                        with proxy._lock:
                            proxy._memory.pop(path.split("?")[0], None)
                    got = self._from_memory(method, path, headers) if proxy.memory else None
                    if got is None:
                        try:
                            got = self._ask(method, path, headers, body)
                        except (OSError, http.client.HTTPException):
                            return self._error(502, "BadGateway")
                    status, reason, resp_headers, data = got
                    self.send_response(status, reason)
                    for k, v in resp_headers:
                        if k.lower() not in _HOP_HEADERS and k.lower() != "content-length":
                            self.send_header(k, v)
                    # A HEAD's Content-Length is the object's size, not its (empty) body's.
                    length = dict((k.lower(), v) for k, v in resp_headers).get("content-length", "0") if method == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if method == "HEAD":
                        return
                    if fault == "short":
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True  # a clean end of stream, short of Content-Length
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(socket.SHUT_WR)
                        return
                    self._send(data)
                finally:
                    with proxy._lock:
                        proxy._in_flight -= 1

            def _ask(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, list, bytes]:
                fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
                if body and "Content-Length" not in fwd:
                    fwd["Content-Length"] = str(len(body))
                conn = self._upstream()
                try:
                    conn.request(method, path, body=body or None, headers=fwd)
                    resp = conn.getresponse()
                    return resp.status, resp.reason, resp.getheaders(), resp.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    self.upstream_conn = None
                    raise

            def _from_memory(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, list, bytes] | None:
                """A ranged GET of an object answered from the proxy's copy (``memory=True``), or a
                HEAD of an object copied already."""
                rng = headers.get("Range") or headers.get("range")
                if method == "HEAD" and "?" not in path:
                    with proxy._lock:
                        held = proxy._memory.get(path)
                    return None if held is None else (200, "OK", held[0] + [("Content-Length", str(len(held[1])))], b"")
                if method != "GET" or "?" in path or not rng or not rng.startswith("bytes="):
                    return None
                with proxy._lock:
                    held = proxy._memory.get(path)
                if held is None:
                    plain = {k: v for k, v in headers.items() if k.lower() not in ("range", "if-match")}
                    status, _, resp_headers, data = self._ask("GET", path, plain, b"")
                    if status != 200:
                        return None
                    keep = [(k, v) for k, v in resp_headers if k.lower() in ("etag", "last-modified", "content-type")]
                    held = (keep, data)
                    with proxy._lock:
                        proxy._memory[path] = held
                keep, data = held
                etag = dict((k.lower(), v) for k, v in keep).get("etag")
                want = headers.get("If-Match") or headers.get("if-match")
                if want is not None and want not in ("*", etag):
                    return 412, "Precondition Failed", [], b""
                lo_text, _, hi_text = rng[len("bytes="):].partition("-")
                lo = int(lo_text)
                hi = min(len(data), int(hi_text) + 1) if hi_text else len(data)
                return 206, "Partial Content", keep + [("Content-Range", f"bytes {lo}-{hi - 1}/{len(data)}"),
                                                      ("Accept-Ranges", "bytes")], data[lo:hi]

            def _send(self, data: bytes) -> None:
                view = memoryview(data)
                step = 1 << 16
                for i in range(0, len(view), step):
                    piece = view[i : i + step]
                    bucket = proxy._bucket
                    if bucket is not None:
                        bucket.take(len(piece))
                    with proxy._lock:  # counted before it is sent: a client that has it sees it counted
                        proxy.counters.body_bytes += len(piece)
                    self.wfile.write(piece)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        return Handler


@dataclass
class S3Server:
    """moto's S3 on 127.0.0.1 behind a :class:`FaultProxy`; ``endpoint`` is the proxy's."""

    moto: object
    moto_endpoint: str
    proxy: FaultProxy
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    @property
    def endpoint(self) -> str:
        return self.proxy.endpoint

    def client(self):  # noqa: ANN201 - a boto3 client straight to moto (not through the proxy)
        import boto3

        return boto3.client("s3", endpoint_url=self.moto_endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def create_bucket(self, name: str | None = None, *, public: bool = False) -> str:
        """Create a bucket (a fresh unique name when ``name`` is None) and return its name.

        ``public``: anyone may list it, unsigned (anonymous access).
        """
        name = name or f"st-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name, **({"ACL": "public-read"} if public else {}))
        return name

    def upload(self, bucket: str, key: str, data: bytes | str | os.PathLike, *, public: bool = False) -> None:
        """Put ``data`` (bytes, or a local file's path) at ``s3://bucket/key``; ``public``: readable unsigned."""
        if not isinstance(data, bytes):
            data = Path(data).read_bytes()
        self.client().put_object(Bucket=bucket, Key=key, Body=data, **({"ACL": "public-read"} if public else {}))

    def upload_dir(self, local: str | os.PathLike, bucket: str, prefix: str = "") -> list[str]:
        """Upload every file under ``local`` to ``s3://bucket/prefix...``; the URLs, sorted."""
        local = Path(local)
        urls = []
        client = self.client()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(local).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            urls.append(f"s3://{bucket}/{key}")
        return urls

    def env(self) -> dict[str, str]:
        """The standard AWS environment that points a client at the proxy."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def storage_options(self, **extra: object) -> dict[str, object]:
        """streamtok's ``storage_options=`` for this server (the same settings as :meth:`env`)."""
        return {"endpoint": self.endpoint, "access_key_id": self.access_key, "secret_access_key": self.secret_key,
                "region": self.region, "allow_http": True, **extra}

    def stop(self) -> None:
        self.proxy.close()
        self.moto.stop()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def moto_missing() -> str | None:
    """Why the server cannot start here (``None`` when it can)."""
    try:
        import boto3  # noqa: F401
        import flask  # noqa: F401
        import flask_cors  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as exc:
        return f"moto[server] is not installed ({exc}); pip install -e .[dev]"
    return None


def start_s3(*, latency_s: float = 0.0, bandwidth_bps: float | None = None, hang_s: float = 3.0,
             memory: bool = False) -> S3Server:
    """Start moto's S3 server and a fault proxy in front of it, both on 127.0.0.1 (see :class:`FaultProxy`)."""
    reason = moto_missing()
    if reason:
        raise RuntimeError(reason)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    upstream = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:  # wait until it answers
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    proxy = FaultProxy(upstream, latency_s=latency_s, bandwidth_bps=bandwidth_bps, hang_s=hang_s, memory=memory)
    return S3Server(server, f"http://{upstream}", proxy)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """The session's loopback S3 server (skipped, with the reason, without moto[server])."""
    reason = moto_missing()
    if reason:
        pytest.skip(reason)
    server = start_s3()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3Server, str]]:
    """``(server, bucket)``: a fresh bucket, the proxy reset, the AWS environment set to the server."""
    s3.proxy.reset()
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3.create_bucket()
    yield s3, bucket
    s3.proxy.reset()


@dataclass
class ServerProcess:
    """This module's server running as its own process (see :func:`s3_process`).

    ``client`` is a boto3 client of the moto behind the proxy (to create and fill buckets,
    neither delayed nor counted); :meth:`stats` asks the server process what its proxy saw.
    """

    client: Any
    endpoint: str
    moto_endpoint: str
    process: Any

    @property
    def pid(self) -> int:
        return self.process.pid

    def _ask(self, command: str) -> dict[str, Any]:
        import json

        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stats(self) -> dict[str, Any]:
        """The proxy's counters since the last :meth:`reset` (requests, GETs, ranged GETs,
        HEADs, LISTs, body bytes, the most requests in flight at once) and the server
        process's CPU seconds so far (user + system, moto and proxy together)."""
        return self._ask("stats")

    def reset(self) -> None:
        """Zero the proxy's counters (its copies of objects, in ``memory`` mode, are kept)."""
        self._ask("reset")


@contextlib.contextmanager
def s3_process(*, latency_ms: float = 0.0, memory: bool = False) -> Iterator[ServerProcess]:
    """This module's server run as its own process (see :func:`main`: a benchmark's client then
    shares no interpreter lock with the server), with the ``AWS_*`` environment of this process
    pointed at its proxy."""
    import json
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, __file__, "--latency-ms", str(latency_ms), *(["--memory"] if memory else [])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        where = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        os.environ.update({"AWS_ENDPOINT_URL": where["endpoint"], "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION, "AWS_ALLOW_HTTP": "true"})
        import boto3

        client = boto3.client("s3", endpoint_url=where["moto_endpoint"], region_name=REGION,
                              aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        yield ServerProcess(client, where["endpoint"], where["moto_endpoint"], server)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(timeout=30)


@contextlib.contextmanager
def s3_in_subprocess(*, latency_ms: float = 0.0, memory: bool = False) -> Iterator[Any]:
    """:func:`s3_process`, yielding only the boto3 client of the moto behind the proxy."""
    with s3_process(latency_ms=latency_ms, memory=memory) as server:
        yield server.client


def _stats(proxy: FaultProxy) -> dict[str, Any]:
    with proxy._lock:
        c = proxy.counters
        out = {"requests": c.requests, "gets": c.gets, "range_gets": c.range_gets, "heads": c.heads, "lists": c.lists,
               "body_bytes": c.body_bytes, "max_in_flight": c.max_in_flight}
    t = os.times()
    out["cpu_s"] = t.user + t.system
    return out


def main() -> None:
    """``python tests/s3_server.py [--latency-ms N] [--bandwidth-mbps N] [--memory]``: serve in
    this process (so a benchmark's client does not share its interpreter lock with the server),
    print one JSON line ``{"endpoint", "moto_endpoint"}``, then answer each line of stdin:
    ``stats`` (one JSON line: the proxy's counters and this process's CPU seconds) or ``reset``
    (counters to zero); stop when stdin closes."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--bandwidth-mbps", type=float, default=0.0)
    p.add_argument("--memory", action="store_true", help="answer ranged GETs from the proxy's copy of each object")
    args = p.parse_args()
    server = start_s3(latency_s=args.latency_ms / 1000, bandwidth_bps=args.bandwidth_mbps * 1e6 / 8 or None,
                      memory=args.memory)
    print(json.dumps({"endpoint": server.endpoint, "moto_endpoint": server.moto_endpoint}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "reset":
            with server.proxy._lock:
                server.proxy.counters = Counters()
        if command in ("stats", "reset"):
            print(json.dumps(_stats(server.proxy)), flush=True)
    server.stop()


if __name__ == "__main__":
    main()
