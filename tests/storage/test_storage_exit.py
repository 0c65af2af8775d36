"""A script that reads a batch from an object store and ends exits cleanly (requests still in flight).

The loader reads ahead, so when such a script ends, ranged GETs are in flight on the storage
loop. obstore finishes every request, cancelled or not, from a thread of its Rust runtime that
attaches to the interpreter once more; if that happens while the interpreter finalizes, the
process aborts or crashes after the script's last line (SIGABRT "FATAL: exception not rethrown",
SIGSEGV, SIGBUS). With no exit hook it was 10 of 12 runs; with a hook that cancelled the
requests and stopped the loop at once, about 2 of 100 (the loop stopped before it passed the
cancellations on, so obstore's threads came back later). The end-to-end test below runs such a
script twice (it catches the first kind of regression, not reliably a rate of a few percent);
the in-process tests check the mechanism deterministically: every obstore call is counted until
its thread has detached, and the exit hook returns only once nothing is owed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from s3_server import s3, s3_bucket  # noqa: F401

from _util import make_shards
from streamtok.errors import StorageError
from streamtok.storage import store as store_mod
from streamtok.storage._rustloop import StorageLoop

SCRIPT = """
import streamtok

loader = streamtok.loader({url!r}, seq_len=256, batch_size=8, split="all")
x, y = next(iter(loader))  # the loader reads ahead: requests are in flight from here on
print("read", tuple(x.shape))
"""


@pytest.mark.slow
def test_a_script_that_read_a_remote_batch_exits_0(s3_bucket, tmp_path):
    server, bucket = s3_bucket
    make_shards(tmp_path / "shards", [100_000, 100_000], dtype=np.uint16)
    server.upload_dir(tmp_path / "shards", bucket, "shards/")
    env = {**os.environ, "STREAMTOK_CACHE_DIR": str(tmp_path / "cache"), "STREAMTOK_METRICS": "0"}
    code = SCRIPT.format(url=f"s3://{bucket}/shards/")
    for _ in range(2):
        done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
        assert (done.returncode, done.stdout) == (0, "read (8, 256)\n"), done.stderr[-3000:]


def _storage_thread() -> tuple[StorageLoop, threading.Thread]:
    """A storage loop of the test's own (the exit hook stops the loop it is given)."""
    loop = StorageLoop()
    thread = threading.Thread(target=loop.run_forever, name="test-storage", daemon=True)
    thread.start()
    return loop, thread


def _until(cond, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_obstore_calls_are_counted_until_their_thread_detached(s3_bucket):
    server, bucket = s3_bucket
    server.upload(bucket, "blob", bytes(range(256)) * 64)
    store = store_mod.RemoteStore(server.storage_options())
    loop, thread = _storage_thread()
    try:
        ref = asyncio.run_coroutine_threadsafe(store.head_async(f"s3://{bucket}/blob"), loop).result(30)
        reads = [asyncio.run_coroutine_threadsafe(store.fetch_range_async(ref, i, i + 100), loop) for i in range(8)]
        assert [bytes(r.result(30)) for r in reads] == [(bytes(range(256)) * 64)[i:i + 100] for i in range(8)]
        # 1 HEAD + 8 x (GET + body) went through obstore's threads; each owed one visit, now paid,
        # and each visiting thread detached (the counts are what the exit hook waits on).
        assert loop.wait_rust_idle(10.0), loop.rust_pending()
        assert loop.rust_pending() == (0, 0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    # Listing (a stream, and with a delimiter) goes through the process's storage loop.
    assert store.list(f"s3://{bucket}/") == store.list(f"s3://{bucket}/", recursive=True) == [ref]
    assert store_mod._event_loop().wait_rust_idle(30.0), store_mod._event_loop().rust_pending()


def test_the_exit_hook_returns_once_obstore_is_done_with_the_cancelled_requests(s3_bucket, monkeypatch):
    server, bucket = s3_bucket
    server.upload(bucket, "blob", b"x" * 4096)
    store = store_mod.RemoteStore(server.storage_options())
    loop, thread = _storage_thread()
    monkeypatch.setattr(store_mod, "_loop", (os.getpid(), loop))  # the process's loop, for store.submit
    ref = asyncio.run_coroutine_threadsafe(store.head_async(f"s3://{bucket}/blob"), loop).result(30)
    server.proxy.latency_s = 3.0  # the reads are in flight when the hook runs
    reads = [asyncio.run_coroutine_threadsafe(store.fetch_range_async(ref, i, i + 1), loop) for i in range(16)]
    assert _until(lambda: loop.rust_pending()[0] == 16), loop.rust_pending()

    store_mod._drain_at_exit(loop, thread, timeout_s=10.0)

    # Nothing is owed: no obstore thread will attach to the interpreter after the hook (the old
    # hook stopped the loop before it passed the cancellations on: its requests came back later).
    assert loop.rust_pending() == (0, 0)
    assert not thread.is_alive()
    assert all(r.cancelled() for r in reads)
    # A thread that asks for more (a daemon prefetch thread) is told so rather than left waiting.
    with pytest.raises(StorageError, match="exiting"):
        store.fetch_range(ref, 0, 1)


def test_the_exit_hook_is_bounded_when_obstore_owes_a_visit():
    loop, thread = _storage_thread()
    owed = asyncio.run_coroutine_threadsafe(_owe_one(loop), loop).result(10)
    started = time.monotonic()
    store_mod._drain_at_exit(loop, thread, timeout_s=0.3)
    assert time.monotonic() - started < 5.0  # two bounded waits of 0.3 s, not forever
    assert loop.rust_pending() == (1, 0) and not owed.done()
    assert not thread.is_alive()


async def _owe_one(loop: StorageLoop) -> asyncio.Future:
    """A counted future that nothing will ever complete (a request that never returns)."""
    from streamtok.storage._rustloop import rust_call

    return rust_call(asyncio.get_running_loop().create_future)
