"""The loopback S3 harness itself: moto behind the fault proxy (tests/s3_server.py)."""

from __future__ import annotations

import http.client
import time

import pytest
from s3_server import s3, s3_bucket  # noqa: F401


def _get(endpoint: str, path: str, rng: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Range": rng} if rng else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_ranged_get_through_the_proxy_is_counted(s3_bucket):
    server, bucket = s3_bucket
    data = bytes(range(256)) * 40
    server.upload(bucket, "a/x.bin", data, public=True)
    status, body = _get(server.endpoint, f"/{bucket}/a/x.bin", "bytes=100-199")
    assert status == 206 and body == data[100:200]
    c = server.proxy.counters
    assert (c.requests, c.range_gets, c.body_bytes) == (1, 1, 100)
    assert c.log == [("GET", f"/{bucket}/a/x.bin", "bytes=100-199")]


@pytest.mark.parametrize("kind,status", [("500", 500), ("503", 503), ("slowdown", 503)])
def test_error_faults_answer_once_then_pass(s3_bucket, kind, status):
    server, bucket = s3_bucket
    server.upload(bucket, "x.bin", b"0123456789", public=True)
    server.proxy.inject(kind, match="x.bin")
    got, body = _get(server.endpoint, f"/{bucket}/x.bin")
    assert got == status
    assert (b"SlowDown" in body) == (kind == "slowdown")
    assert _get(server.endpoint, f"/{bucket}/x.bin") == (200, b"0123456789")
    assert server.proxy.counters.faults == {kind: 1}


def test_reset_short_and_timeout_faults(s3_bucket):
    server, bucket = s3_bucket
    server.upload(bucket, "x.bin", b"a" * 1000, public=True)
    server.proxy.inject("reset")
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _get(server.endpoint, f"/{bucket}/x.bin")
    server.proxy.inject("short")
    with pytest.raises(http.client.IncompleteRead):
        _get(server.endpoint, f"/{bucket}/x.bin")
    server.proxy.hang_s = 0.5
    server.proxy.inject("timeout")
    with pytest.raises(TimeoutError):
        _get(server.endpoint, f"/{bucket}/x.bin", timeout=0.2)
    assert server.proxy.counters.faults == {"reset": 1, "short": 1, "timeout": 1}


def test_latency_is_added_per_request(s3_bucket):
    server, bucket = s3_bucket
    server.upload(bucket, "x.bin", b"z", public=True)
    server.proxy.latency_s = 0.05
    t = time.perf_counter()
    assert _get(server.endpoint, f"/{bucket}/x.bin")[0] == 200
    assert time.perf_counter() - t >= 0.05


def test_memory_mode_answers_ranges_from_a_copy_and_checks_if_match(s3_bucket):
    server, bucket = s3_bucket
    data = bytes(range(256)) * 8
    server.upload(bucket, "m.bin", data, public=True)
    server.proxy.memory = True
    try:
        for a, b in ((0, 10), (100, 356), (2040, 2047)):
            assert _get(server.endpoint, f"/{bucket}/m.bin", f"bytes={a}-{b}") == (206, data[a : b + 1])
        host, port = server.endpoint.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", f"/{bucket}/m.bin", headers={"Range": "bytes=0-3", "If-Match": '"other"'})
        assert conn.getresponse().status == 412
        conn.close()
    finally:
        server.proxy.memory = False
        server.proxy._memory.clear()
