"""RemoteStore: ranged reads, HEAD and listing against object stores, retried, counted, asynchronous.

One asyncio loop per process runs on a daemon thread; every request is a coroutine on it, so
many ranged GETs are in flight at once (``max_in_flight``, default 256, per store) while the
caller's thread goes on. The client is obstore (the Rust ``object_store`` crate: S3, GCS,
Azure and HTTP with one connection pool each); its own retries are off so that streamtok's
are the only ones: bounded exponential backoff with jitter (``retries`` attempts after the
first, delays ``retry_base_s * 2**n`` up to ``retry_max_s``, each drawn from half to all of
that), each retry counted. What is retried: 5xx answers, throttling (503 SlowDown, 429),
timeouts, connection resets and short bodies. What is not: 4xx answers (no permission, no
such object) and a failed ``If-Match`` (412: the object changed), which raise at once.

Every GET of a known object carries ``If-Match: <etag>`` (when the store gave an ETag; not to
the Hub, which would pass it on to its CDN) and its answer's size, ETag and length are
checked: bytes of another version of an object (also from a store that ignores ``If-Match``,
as fake-gcs-server does), or fewer bytes than asked for, are never returned. ETags are kept
quoted (Azure's and GCS's listings give them bare, their HEAD and GET quoted).

Requests still in flight when the interpreter exits (a loader that fetched steps ahead and
was not read to its end) are cancelled, queued ones are never sent, and the exit waits
(bounded) until obstore's threads have made their last call into Python: one arriving while
the interpreter is torn down crashed the process (SIGSEGV/SIGABRT in 10 of 12 runs of such a
script with no hook; see ``_drain_at_exit`` and :mod:`._rustloop`).

obstore's runtime does not survive ``fork``: a process forked after its parent made a
request would hang on its first one. Such a process gets a :class:`StorageError` saying so
instead; DataLoader workers over remote data start with ``forkserver`` (see
``StreamtokLoader``).

At exit, requests still in flight are cancelled and the hook waits (bounded) until obstore's
threads are done with the interpreter: one that calls back into Python while it finalizes
crashes the process (see :mod:`._rustloop` and :func:`_drain_at_exit`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import random
import re
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ObjectChangedError, RemoteReadError, ShardNotFoundError, StorageError
from . import urls
from .options import StorageOptions, as_options, redact
from ._rustloop import StorageLoop, rust_call
from .refs import ObjectRef, normalize_etag, same_version

_used_in_pid: int | None = None  # the process whose obstore runtime started
_loop_lock = threading.Lock()
_loop: tuple[int, StorageLoop] | None = None
_STATUS = re.compile(r"status code: (\d{3})")


@dataclass
class NetCounters:
    """What one process's store did (read by metrics)."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    in_flight: int = 0
    failures: int = 0


def _check_process() -> None:
    global _used_in_pid
    pid = os.getpid()
    if _used_in_pid is None:
        _used_in_pid = pid
    elif _used_in_pid != pid:
        raise StorageError(
            "this process was forked from one that had already read from an object store; the "
            "store client (obstore/tokio) cannot run after fork. Start DataLoader workers with "
            "multiprocessing_context='forkserver' or 'spawn' (streamtok does so by default for remote data)"
        )


def _event_loop() -> StorageLoop:
    global _loop
    with _loop_lock:
        if _loop is not None and _loop[0] == os.getpid():
            return _loop[1]
        loop = StorageLoop()
        thread = threading.Thread(target=loop.run_forever, name="streamtok-storage", daemon=True)
        thread.start()
        atexit.register(_drain_at_exit, loop, thread)
        _loop = (os.getpid(), loop)
        return loop


def _drain_at_exit(loop: StorageLoop, thread: threading.Thread, timeout_s: float = 5.0) -> None:
    """Cancel the requests in flight, stop the storage loop, and wait until obstore is done with Python.

    A loader reads ahead, so a script that takes a batch and ends leaves requests in flight.
    obstore's runtime threads finish every request, cancelled or not, by attaching to the
    interpreter once more; one that attaches while the interpreter finalizes is made to exit
    through Rust frames and the process aborts or crashes after the script's last line (see
    :mod:`._rustloop`). Measured on a script that read one batch from a loopback S3 and ended
    (2-core VM shared with other jobs): 10 of 12 runs crashed with no hook. With a hook that
    cancelled the requests and stopped the loop at once, 8 of 270 (3 at a time, side by side
    with the fix, load average 10-14; SIGSEGV in ``PyGILState_Ensure`` called by obstore's
    tokio thread, and one SIGABRT): obstore's threads still came back during finalization.
    0 of 270 in the same runs (and 0 of 300 more, alone: 150 2 at a time, 150 3 at a time)
    since the hook keeps the loop running until obstore's last visits are over
    (:meth:`StorageLoop.wait_rust_idle`), then stops it; the median run took 8.1-8.6 s either way.

    Every wait is bounded by ``timeout_s``: a store that does not answer delays the exit, never
    hangs it. A request submitted from here on raises :class:`StorageError` instead of waiting
    for a loop that is stopping. A loop inherited through ``fork`` has no thread in this
    process: nothing to do.

    Args:
        loop: the process's storage loop.
        thread: the daemon thread running it.
        timeout_s: the bound on each wait (the cancellations, the thread, obstore's visits).
    """
    if loop.is_closed() or not thread.is_alive():
        return
    loop.exiting = True  # a thread still running (e.g. a daemon prefetch thread) gets an error, not a hang

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout=timeout_s)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
        return  # a loop that does not answer is left as before: exiting must not hang
    # The loop goes on running meanwhile: it passes the cancellations on to obstore's requests.
    loop.wait_rust_idle(timeout_s)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=timeout_s)
    loop.wait_rust_idle(timeout_s)  # requests other threads started since, if any


def _obstore_store(url: urls.Url, options: StorageOptions) -> Any:
    try:
        from obstore.store import AzureStore, GCSStore, HTTPStore, S3Store
    except ImportError:
        raise StorageError(
            f"{url.store_url}: reading from object storage needs obstore: pip install 'streamtok[remote]'"
        ) from None

    retry = {"max_retries": 0}
    if url.scheme == "s3":
        config, client = options.s3()
        return S3Store(url.root, config=config, client_options=client, retry_config=retry)
    if url.scheme == "gs":
        return GCSStore(url.root, config=options.generic("gs"), client_options=options.client_options(scheme="gs"),
                        retry_config=retry)
    if url.scheme in ("az", "abfs"):
        return AzureStore(url.root, config=options.generic("az"), client_options=options.client_options(), retry_config=retry)
    if url.scheme in ("http", "https"):
        client = options.client_options()
        if url.scheme == "http":
            client["allow_http"] = True
        return HTTPStore.from_url(f"{url.scheme}://{url.root}", client_options=client, retry_config=retry)
    if url.scheme == "hf":
        from .hub import hub_store

        return hub_store(url, options, retry)
    raise StorageError(f"{url}: no store for scheme {url.scheme}://")


class _Transient(Exception):
    """A failure worth another try."""


class _Unsatisfiable(Exception):
    """HTTP 416: the range starts past the object's end (an empty object has no byte 0)."""


class RemoteStore:
    """Ranged reads, HEAD and listing for the objects of one reader (any scheme), per process.

    Args:
        storage_options: see :mod:`streamtok.storage.options`.
    """

    def __init__(self, storage_options: StorageOptions | dict[str, Any] | None = None):
        self.options = as_options(storage_options)
        self.counters = NetCounters()
        self._pid = -1
        self._stores: dict[str, Any] = {}
        self._limit: asyncio.Semaphore | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"])  # type: ignore[misc]

    # -- plumbing -------------------------------------------------------------------------
    def _fresh(self) -> None:
        if self._pid != os.getpid():  # a new process (spawned worker): new stores, new loop
            self._pid = os.getpid()
            self._stores = {}
            self._limit = None
            self.counters = NetCounters()

    def _store(self, url: urls.Url) -> Any:
        self._fresh()
        store = self._stores.get(url.store_url)
        if store is None:
            _check_process()
            try:
                store = self._stores[url.store_url] = _obstore_store(url, self.options)
            except Exception as exc:  # obstore's builder errors: bad option names or values
                if isinstance(exc, StorageError):
                    raise
                first = str(exc).split("\n", 1)[0]
                raise StorageError(redact(f"{url.store_url}: cannot set up a client ({type(exc).__name__}: {first}); "
                                          "check storage_options")) from None
        return store

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run ``coro`` on the process's storage loop; its future."""
        _check_process()
        self._fresh()
        loop = _event_loop()
        if loop.exiting:  # the loop is (being) stopped: the future would never be done
            coro.close()
            raise StorageError("the interpreter is exiting: this process reads nothing more from object storage")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the storage loop and wait for its result."""
        return self.submit(coro).result()

    def _semaphore(self) -> asyncio.Semaphore:
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.options.own("max_in_flight"))
        return self._limit

    async def _retrying(self, what: str, attempt_fn: Any) -> Any:
        retries = self.options.own("retries")
        base, cap = float(self.options.own("retry_base_s")), float(self.options.own("retry_max_s"))
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                self.counters.retries += 1
                await asyncio.sleep(min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
            async with self._semaphore():
                if getattr(asyncio.get_running_loop(), "exiting", False):  # queued when the process began to exit
                    raise asyncio.CancelledError
                self.counters.requests += 1
                self.counters.in_flight += 1
                try:
                    return await attempt_fn()
                except _Transient as exc:
                    last = str(exc)
                finally:
                    self.counters.in_flight -= 1
        self.counters.failures += 1
        raise RemoteReadError(redact(f"{what}: failed {retries + 1} times, the last time with: {last}; check the "
                                     "store and network, or raise storage_options['retries']"))

    def _classify(self, exc: BaseException, what: str, changed_ok: bool = False) -> BaseException:
        """Map an obstore/network exception to a transient marker or a named error."""
        import obstore.exceptions as oe

        first = urls.redact_queries(redact(str(exc).split("\n", 1)[0]))[:300]
        if isinstance(exc, oe.PreconditionError) and not changed_ok:
            return ObjectChangedError(f"{what}: the object changed since the loader was built (its ETag no longer "
                                      "matches); rebuild the loader on the new data, or restore the old object")
        if isinstance(exc, (FileNotFoundError, oe.NotFoundError)):
            return ShardNotFoundError(f"{what}: no such object ({first})")
        if isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)):
            return RemoteReadError(f"{what}: access refused ({first}); check the credentials in storage_options or the environment")
        if isinstance(exc, (oe.UnknownConfigurationKeyError, oe.InvalidPathError, oe.NotSupportedError)):
            return StorageError(f"{what}: {first}")
        status = _STATUS.search(str(exc))
        if status and 400 <= int(status.group(1)) < 500 and int(status.group(1)) not in (408, 429):
            return RemoteReadError(f"{what}: refused with HTTP {status.group(1)} ({first})")
        return _Transient(first)

    # -- reads ----------------------------------------------------------------------------
    async def fetch_range_async(self, obj: ObjectRef, start: int, stop: int) -> memoryview:
        """Bytes ``[start, stop)`` of ``obj``, exactly, from the version the loader was built on.

        Raises:
            RemoteReadError: the read failed past the retry bound, or was refused.
            ObjectChangedError: the object's ETag or size is no longer the one in ``obj``.
        """
        import obstore

        what = obj.describe(start, stop)
        if not 0 <= start <= stop <= obj.size:
            raise RemoteReadError(f"{what}: outside the object's {obj.size} bytes")
        if stop == start:
            return memoryview(b"")
        u = urls.parse(obj.url)
        store = self._store(u)
        options: dict[str, Any] = {"range": (start, stop)}
        if obj.etag and u.scheme != "hf":  # the Hub redirects to CDNs whose ETags are not the Hub's: checked below
            options["if_match"] = obj.etag

        async def attempt() -> memoryview:
            try:
                result = await rust_call(obstore.get_async, store, u.key, options=options)
                data = await rust_call(result.bytes_async)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
                raise self._classify(exc, what) from None
            size = result.meta.get("size")
            if size is not None and size != obj.size:
                raise ObjectChangedError(f"{what}: the object is now {size} bytes, not {obj.size}: it changed since "
                                         "the loader was built; rebuild the loader on the new data")
            etag = normalize_etag(result.meta.get("e_tag"))
            # A store that ignored If-Match (some emulators and S3 clones), and the Hub (none sent).
            if obj.etag and obj.etag_in_reads and etag and not same_version(etag, obj.etag):
                raise ObjectChangedError(f"{what}: the object's ETag is now {etag}, not {obj.etag}: it changed since "
                                         "the loader was built; rebuild the loader on the new data")
            if len(data) != stop - start:
                raise _Transient(f"a short read: {len(data)} bytes of {stop - start}")
            self.counters.bytes += len(data)
            return memoryview(data)

        return await self._retrying(what, attempt)

    async def fetch_first_async(self, url: str, n: int) -> tuple[ObjectRef, memoryview]:
        """The object at ``url`` (its size and ETag, as a HEAD would give them) and its first
        ``n`` bytes (all of them when it is smaller), in ONE ranged GET: opening a shard that no
        listing described costs one request, not a HEAD and then a GET.

        Raises:
            ShardNotFoundError: no such object.
            RemoteReadError: the read failed past the retry bound, or was refused.
        """
        import obstore

        u = urls.parse(url)
        what = urls.redact_queries(url)
        store = self._store(u)

        async def attempt() -> tuple[ObjectRef, memoryview]:
            try:
                result = await obstore.get_async(store, u.key, options={"range": (0, n)})
                data = await result.bytes_async()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
                status = _STATUS.search(str(exc))
                if status and status.group(1) == "416":
                    raise _Unsatisfiable() from None
                raise self._classify(exc, what) from None
            ref = ObjectRef(url, int(result.meta["size"]), normalize_etag(result.meta.get("e_tag")))
            if len(data) != min(n, ref.size):
                raise _Transient(f"a short read: {len(data)} bytes of {min(n, ref.size)}")
            self.counters.bytes += len(data)
            return ref, memoryview(data)

        try:
            return await self._retrying(what, attempt)
        except _Unsatisfiable:  # S3 answers 416 for any range of an empty object: ask what it is now
            ref = await self.head_async(url)
            return ref, await self.fetch_range_async(ref, 0, min(n, ref.size))

    def fetch_range(self, obj: ObjectRef, start: int, stop: int) -> memoryview:
        """:meth:`fetch_range_async`, waited for (the interface the blocks cache builds on)."""
        return self.run(self.fetch_range_async(obj, start, stop))

    def fetch_ranges(self, requests: Sequence[tuple[ObjectRef, int, int]]) -> list[memoryview]:
        """Many ranges at once, concurrently; in the order asked."""
        async def all_of() -> list[memoryview]:
            return list(await asyncio.gather(*(self.fetch_range_async(o, a, b) for o, a, b in requests)))

        return self.run(all_of()) if requests else []

    # -- metadata -------------------------------------------------------------------------
    async def head_async(self, url: str) -> ObjectRef:
        """The size and ETag of the object at ``url``.

        Raises:
            ShardNotFoundError: no such object.
        """
        import obstore

        u = urls.parse(url)
        what = urls.redact_queries(url)
        store = self._store(u)

        if u.scheme == "hf":  # the Hub's own metadata (a HEAD not followed to the CDN): see .hub
            from .hub import file_ref

            return await asyncio.to_thread(file_ref, url, self.options)

        async def attempt() -> ObjectRef:
            try:
                meta = await rust_call(obstore.head_async, store, u.key)
            except Exception as exc:  # noqa: BLE001
                raise self._classify(exc, what) from None
            return ObjectRef(url, int(meta["size"]), normalize_etag(meta.get("e_tag")))

        return await self._retrying(what, attempt)

    def head_many(self, urls_: Sequence[str]) -> list[ObjectRef]:
        """:meth:`head_async` for each URL, concurrently."""
        async def all_of() -> list[ObjectRef]:
            return list(await asyncio.gather(*(self.head_async(x) for x in urls_)))

        return self.run(all_of()) if urls_ else []

    def list(self, url: str, *, recursive: bool = False) -> list[ObjectRef]:
        """The objects under the prefix ``url`` (directly under it unless ``recursive``)."""
        import obstore

        u = urls.parse(url)
        prefix = u.key
        what = urls.redact_queries(url)
        store = self._store(u)

        async def attempt() -> list[ObjectRef]:
            try:
                if recursive:
                    stream = obstore.list(store, prefix=prefix or None)
                    metas = []
                    while True:
                        try:
                            metas.extend(await rust_call(stream.__anext__))
                        except StopAsyncIteration:
                            break
                else:
                    listing = await rust_call(obstore.list_with_delimiter_async, store, prefix=prefix or None)
                    metas = listing["objects"]
            except Exception as exc:  # noqa: BLE001
                raise self._classify(exc, what) from None
            # Listings give Azure's and GCS's ETags bare, HEAD and GET quoted: one form for both.
            return [ObjectRef(u.child(m["path"]), int(m["size"]), normalize_etag(m.get("e_tag"))) for m in metas]

        return self.run(self._retrying(f"listing {what}", attempt))
