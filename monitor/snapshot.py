"""Sample a run (its published counters and what the OS says) into plain-dict snapshots.

:class:`Sampler` keeps the previous readings and turns cumulative counters into rates over
the last interval. Per-PID bookkeeping: worker PIDs change every pass, and when a reaped
worker's I/O counters are added to its parent's, the worker's last reading is subtracted
from the parent's next jump, so no byte is counted twice. Cost per sample: the stats slots,
``/proc/PID/{status,stat,io}`` of each process (~20 µs each) and the page replay; the
expensive probes, ``smaps_rollup`` (PSS, a walk of every mapping: ~28 ms for a worker with
1.2 GB of shards mapped) and shard residency, run every ``slow_interval_s`` only (PSS at
every ``pss_every``-th such round: the probe costing most, of the figure changing least), and
less often still when they take longer: a round that took ``d`` seconds of CPU waits at least
``400 d`` (at most 0.25% of a core). The thread that calls it every interval is
:class:`~streamtok_monitor.watcher.Watcher`.
"""

from __future__ import annotations

import glob
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from streamtok.metrics import publish as metrics

from . import probes
from .roles import process_roles

if TYPE_CHECKING:
    from .pages import PageCounter

Snapshot = dict[str, Any]


_COUNTERS = ("batches", "tokens", "wait_ns")


def _rate(delta: float, dt: float) -> float:
    return delta / dt if dt > 0 else 0.0


def _role(slots: list[dict[str, int]], role: int) -> dict[str, int] | None:
    return next((s for s in slots if s["role"] == role), None)


_loop_slot = metrics.loop_slot  # the slot the training loop writes


class Sampler:
    """Snapshots of one run (``run_dir``) or of any process (``pid``, with ``files`` globs).

    Args:
        run_dir: a streamtok run directory (see :mod:`streamtok.metrics.publish`).
        pid: a process to watch when there is no run directory.
        files: glob patterns of files whose page-cache residency to show (``--pid`` mode).
        history: values kept for each sparkline (tokens/s, waiting, disk, hit).
        slow_interval_s: least seconds between two rounds of the expensive probes (PSS,
            residency); longer when a round costs more (see the module docstring).
        pss_every: PSS (``smaps_rollup``) at every this many rounds (a new process at once).
        lazy_pages: leave the page replay to :meth:`load_pages` (``--once``).
    """

    def __init__(
        self, *, run_dir: str | None = None, pid: int | None = None, files: tuple[str, ...] = (), history: int = 120,
        slow_interval_s: float = 5.0, pss_every: int = 2, lazy_pages: bool = False,
    ):
        if run_dir is None and pid is None:
            raise ValueError("give a run directory or a pid")
        self.run_dir = run_dir
        # Checked whole before use (metrics.RunDirError names the file and the key).
        self.manifest: dict[str, Any] = metrics.read_manifest(run_dir, full=True) if run_dir else {}
        self.stats = metrics.StatsReader(run_dir) if run_dir else None
        self.pid = int(self.manifest["pid"]) if run_dir else int(pid)  # type: ignore[arg-type]
        # Another host's (or PID namespace's) run: its PID means nothing here, never "alive".
        self.local = metrics.is_local(self.manifest) if run_dir else True
        self.files = files
        self.slow_interval_s = slow_interval_s
        self.history: deque[float] = deque(maxlen=history)
        self.histories: dict[str, deque[float]] = {k: deque(maxlen=history) for k in ("wait", "disk", "hit")}
        self._slow_at = 0.0
        self._slow_time: float | None = None
        self.pss_every = pss_every
        self._rounds = 0  # slow rounds so far
        self._pss_time: float | None = None
        self._rollup: dict[int, dict[str, int]] = {}
        self._cpu: dict[int, float] = {}
        self._started: float | None = None  # the trainer's start (since boot) pid_alive accepted
        self._held: dict[int, int] = {}  # PID -> the worker slot it was seen holding (alive PIDs only)
        self._shards: list[dict[str, Any]] = []
        self._final: Snapshot | None = None
        self._prev_t: float | None = None
        self._prev_slots: dict[int, dict[str, int]] = {}
        self._io: dict[int, int] = {}
        self._reaped = 0  # read_bytes of vanished children, not yet seen in the parent's counter
        self._disk_total = 0  # bytes the tree read from disk since the first sample
        self._round: tuple[int, int, int] | None = None  # at the last residency round: resident, size, disk total
        self._reads = "shards"  # whose reads the tree's disk reads are (see _shard_reads)
        self._reaped_cpu = 0.0  # CPU seconds of vanished children, not yet seen in the parent's cutime
        self._children_cpu: float | None = None  # the trainer's cutime + cstime at the last sample
        self._last: Snapshot | None = None
        self._pos: tuple[int, int, tuple[int, int], int] | None = None  # pid, passes, position, batches
        self.pages: PageCounter | None = None
        if not lazy_pages:
            self.load_pages()

    def load_pages(self) -> None:
        """Build the page replay (imports numpy, ~0.2-0.5 s): ``--once`` does it while its
        window runs, after the first sample; until then no pages are counted."""
        from .pages import PageCounter  # numpy: only for a streamtok run

        # A mixture's order is not one WindowSampler's: its pages are not replayed, and its
        # hit ratio shows as unknown rather than as that of another order.
        replay = bool(self.manifest) and not self.manifest.get("mixture")
        # Remote shards (URLs) have no page cache to replay against, and reading them here would
        # send this process to the object store.
        replay = replay and not any("://" in str(s.get("path", "")) for s in self.manifest.get("shards", []))
        try:
            self.pages = PageCounter(self.manifest) if replay else None
        except Exception:  # shards moved or unreadable: no hit ratio, everything else works
            self.pages = None

    # -- the run's own counters -------------------------------------------------------------
    def _slot_deltas(self, slots: list[dict[str, int]]) -> dict[int, dict[str, int]]:
        """Counts since the last sample, per slot. A worker's slot counts on across the
        processes of that worker id (re-spawned each pass), so it is compared with itself
        whatever its PID; a count that went back (a slot taken anew) counts from zero."""
        out = {}
        for s in slots:
            prev = self._prev_slots.get(s["slot"])
            worker = s["role"] == metrics.ROLE_WORKER
            same = prev is not None and (prev["pid"] == s["pid"] or (worker and prev["role"] == s["role"]))
            out[s["slot"]] = {k: s[k] - (prev[k] if same and s[k] >= prev[k] else 0) for k in _COUNTERS}  # type: ignore[index]
        return out

    def _pages(self, trainer: dict[str, int] | None, batches: int) -> tuple[int, int]:
        """Page bytes the reader touched, and token bytes it read, since the last sample.

        Replays the windows between the last two published positions. A new pass (a
        ``break`` and a new ``iter()``, or the next epoch's iteration) restarts at its
        published start: the last pass counts up to where it stopped, the new one from where
        it began. Passes begun and ended between two samples left no positions: their
        batches count at the average page bytes of a step.
        """
        if trainer is None:  # not iterated yet: the first pass will count from its start
            self._pos = (0, 0, (0, 0), 0)
            return 0, 0
        m = self.manifest
        gathered = batches * m["batch_size"] * (m["seq_len"] + 1) * m["token_bytes"]
        pos = (trainer["epoch"], trainer["offset"])
        prev, self._pos = self._pos, (trainer["pid"], trainer["passes"], pos, trainer["batches"])
        if prev is None or self.pages is None or prev[0] not in (0, trainer["pid"]):
            return 0, gathered
        _, passes0, pos0, batches0 = prev
        new = trainer["passes"] - passes0
        if new <= 0:
            return self.pages.between(pos0, pos), gathered
        start = (trainer["pass_epoch"], trainer["pass_offset"])
        total = self.pages.between(start, pos)
        if new == 1:
            return total + self.pages.between(pos0, (trainer["ended_epoch"], trainer["ended_offset"])), gathered
        unknown = max(0, trainer["batches"] - batches0 - self.pages.steps_between(start, pos))
        return total + int(unknown * self.pages.step_bytes()), gathered

    def _throughput(self, slots: list[dict[str, int]], dt: float, pids: list[int]) -> tuple[dict[str, Any], int, int]:
        """Rates of what the training loop took, and the pages and bytes the loader read.

        Behind a background prefetch thread the loader's slot (0) is that thread's: then the
        consumer slot, written by the training loop, gives the tokens, batches and wait.
        """
        deltas = self._slot_deltas(slots) if self._prev_t is not None else {s["slot"]: dict.fromkeys(_COUNTERS, 0) for s in slots}
        zero = dict.fromkeys(_COUNTERS, 0)
        trainer, loop = _role(slots, metrics.ROLE_TRAINER), _loop_slot(slots)
        d0 = deltas.get(0, zero)
        dl = deltas[loop["slot"]] if loop else zero
        consumer = loop is not None and loop["role"] == metrics.ROLE_CONSUMER
        background = bool((self.manifest.get("prefetch") or {}).get("background"))
        tps = _rate(dl["tokens"], dt)
        if self._prev_t is not None:
            self.history.append(tps)
        workers = []
        for s in slots:
            if s["role"] != metrics.ROLE_WORKER:
                continue
            d = deltas[s["slot"]]
            workers.append({
                "worker_id": s["worker_id"], "pid": s["pid"], "alive": s["pid"] in pids,  # in the trainer's tree
                "batches": s["batches"], "batches_per_s": _rate(d["batches"], dt), "tokens_per_s": _rate(d["tokens"], dt),
            })
        page_bytes, gathered = self._pages(trainer, d0["batches"])
        network = self._network(slots, dt, min(1.0, _rate(dl["wait_ns"] / 1e9, dt)))
        self._prev_slots = {s["slot"]: s for s in slots}
        out = {
            "tokens": loop["tokens"] if loop else 0,
            "batches": loop["batches"] if loop else 0,
            "tokens_per_s": tps,
            "batches_per_s": _rate(dl["batches"], dt),
            "wait_fraction": min(1.0, _rate(dl["wait_ns"] / 1e9, dt)),
            # Whose wait that is: the training loop's, or (a run without a consumer slot) the
            # background prefetch thread's wait for the DataLoader.
            "wait_source": "prefetch_thread" if background and not consumer else "loop",
            "prefetch_thread_wait_fraction": min(1.0, _rate(d0["wait_ns"] / 1e9, dt)) if consumer else None,
            "history": list(self.history),
            "workers": workers,
            "network": network,
        }
        return out, page_bytes, gathered

    def _network(self, slots: list[dict[str, int]], dt: float, loop_wait: float) -> dict[str, Any] | None:
        """Remote shards: bytes/s and requests/s from the store, requests in flight, retries,
        the block cache's bytes and hits, and the share of the loop's time spent waiting on the
        network (no workers: the loop's own gathers blocked on the store; with workers: the
        loop's wait for data times the share of the workers' time blocked on the store).
        ``None`` for a run that reads no remote shard."""
        if not any(s.get("net_requests", 0) for s in slots):
            return None
        first = self._prev_t is None
        deltas = {}
        for s in slots:
            prev = self._prev_slots.get(s["slot"])
            same = prev is not None and prev["pid"] == s["pid"] and not first
            deltas[s["slot"]] = {k: s.get(k, 0) - (prev.get(k, 0) if same else 0) for k in ("net_requests", "net_bytes", "net_wait_ns")}
        workers = [s for s in slots if s["role"] == metrics.ROLE_WORKER]
        if workers:
            blocked = sum(min(1.0, _rate(deltas[w["slot"]]["net_wait_ns"] / 1e9, dt)) for w in workers) / len(workers)
            wait = loop_wait * blocked
        else:
            wait = min(1.0, _rate(deltas.get(0, {}).get("net_wait_ns", 0) / 1e9, dt))
        return {
            "bytes_per_s": _rate(sum(d["net_bytes"] for d in deltas.values()), dt),
            "requests_per_s": _rate(sum(d["net_requests"] for d in deltas.values()), dt),
            "in_flight": sum(s.get("net_in_flight", 0) for s in slots),
            "retries": sum(s.get("net_retries", 0) for s in slots),
            "cache_bytes": max(s.get("cache_bytes", 0) for s in slots),
            "cache_hits": sum(s.get("cache_hits", 0) for s in slots),
            "wait_fraction": None if first else wait,
        }

    # -- the OS ----------------------------------------------------------------------------
    def _disk_read(self, pids: list[int]) -> int:
        """Bytes read from disk by the tree since the last call, each PID counted once."""
        first = not self._io
        for pid, last in self._io.items():  # reaped: its reads now show in the parent's counter
            if pid not in pids and pid != self.pid:
                self._reaped += last
        seen, total = {}, 0
        for pid in pids:
            try:
                cur = probes.io(pid)["read_bytes"]
            except (ProcessLookupError, PermissionError, KeyError):
                continue
            last = self._io.get(pid)
            if last is None:
                # A new child starts from zero at fork: all of it is new. The first sample is a baseline.
                delta = 0 if first or pid == self.pid else cur
            else:
                delta = max(0, cur - last)
            if pid == self.pid and delta and self._reaped:
                absorbed = min(delta, self._reaped)  # the kernel added a reaped worker's reads
                delta, self._reaped = delta - absorbed, self._reaped - absorbed
            seen[pid] = max(cur, last or 0)
            total += delta
        self._io = seen
        return total

    def _memory(self, pids: list[int], slots: list[dict[str, int]], dt: float, slow: bool) -> dict[str, Any]:
        """Per process: RSS split, PSS (refreshed when ``slow``), faults, CPU share; totals.

        The headline is Σ anon (anonymous PSS: the memory the loader really holds); file
        pages are shard page cache (droppable) and, in the trainer, shared libraries.
        """
        procs, cpu_now, started = [], {}, {}
        first = not self._cpu
        reaped = 0.0  # CPU of children that ended since the last sample, not yet seen
        for pid, last in self._cpu.items():  # gone: the rest of its CPU shows in its parent's cutime
            if pid not in pids and pid != self.pid:
                self._reaped_cpu += last
        for pid in pids:
            try:
                mem = probes.memory(pid, rollup=slow or pid not in self._rollup)
                flt = probes.faults(pid)
            except (ProcessLookupError, PermissionError):
                continue
            if "pss" in mem:
                self._rollup[pid] = {k: mem[k] for k in ("pss", "pss_anon", "pss_file", "uss")}
            else:
                mem.update(self._rollup[pid])
            cpu_now[pid] = flt["cpu_s"]
            if pid in self._cpu:
                cpu = max(0.0, flt["cpu_s"] - self._cpu[pid]) / dt if dt > 0 else None
            elif pid != self.pid and not first and dt > 0:
                cpu = flt["cpu_s"] / dt  # a child forked since the last sample: all its CPU is new
            else:
                cpu = None
            if pid == self.pid:
                # Reaped children's CPU: the jump of the trainer's cutime, less what was
                # already counted while they lived.
                children = flt["children_cpu_s"]
                if self._children_cpu is not None and dt > 0:
                    jump = max(0.0, children - self._children_cpu)
                    absorbed = min(jump, self._reaped_cpu)
                    self._reaped_cpu -= absorbed
                    reaped = jump - absorbed
                self._children_cpu = children
            started[pid] = flt["start_s"]
            procs.append({"pid": pid, "role": None, **mem, "minflt": flt["minflt"], "majflt": flt["majflt"], "cpu": cpu})
        roles = self._roles(slots, [p["pid"] for p in procs], started)
        for p in procs:
            p["role"] = roles[p["pid"]]
        self._cpu = cpu_now
        self._rollup = {pid: v for pid, v in self._rollup.items() if pid in cpu_now}
        info = probes.meminfo(("MemTotal", "MemAvailable"))
        cpus = [p["cpu"] for p in procs if p["cpu"] is not None]
        if cpus and dt > 0:
            cpus.append(reaped / dt)
        return {
            "cpu_reaped": reaped / dt if dt > 0 else None,  # workers that ended in the interval
            "processes": procs,
            "rss_total": sum(p["rss"] for p in procs),
            "pss_total": sum(p["pss"] for p in procs),
            "pss_anon_total": sum(p["pss_anon"] for p in procs),
            "pss_file_total": sum(p["pss_file"] for p in procs),
            "uss_total": sum(p["uss"] for p in procs),
            "rss_anon_total": sum(p["rss_anon"] for p in procs),
            "rss_file_total": sum(p["rss_file"] for p in procs),
            "cpu_total": sum(cpus) if cpus else None,
            "mem_available": info.get("MemAvailable", 0),
            "mem_total": info.get("MemTotal", 0),
        }

    def _roles(self, slots: list[dict[str, int]], pids: list[int], started: dict[int, float]) -> dict[int, str]:
        """Each process's label (see :mod:`~streamtok_monitor.roles`); remembers which
        processes held a worker slot, so that one whose slot a newer worker took is named exiting."""
        if not self.run_dir:
            return {pid: "process" if pid == self.pid else "child" for pid in pids}
        workers = [s for s in slots if s["role"] == metrics.ROLE_WORKER]
        claimed = {s["pid"]: s["worker_id"] for s in workers}
        n = self.manifest.get("num_workers") or 0
        # Claim times (wall clock) on the clock of /proc start times: seconds since boot.
        boot = time.time() - time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))
        claimed_at: dict[int, float | None] = dict.fromkeys(range(n))
        for s in workers:
            claimed_at[s["worker_id"]] = s["start_ns"] / 1e9 - boot
        roles = process_roles(self.pid, pids, claimed=claimed, claimed_at=claimed_at, seen=self._held,
                              started=started, num_workers=n)
        alive = set(pids)
        self._held = {pid: k for pid, k in {**self._held, **claimed}.items() if pid in alive}
        return roles

    def _paths(self) -> list[str]:
        if self.manifest:
            return [s["path"] for s in self.manifest.get("shards", [])]
        return sorted({p for g in self.files for p in glob.glob(g) if os.path.isfile(p)})

    def _residency(self) -> list[dict[str, Any]]:
        shards = []
        for path in self._paths():
            try:
                r = probes.residency(path)
            except OSError:
                continue
            shards.append({
                "path": path, "size": r.size, "cached": r.cached, "fraction": r.fraction, "method": r.method,
                "evicted_bytes": None if r.evicted is None else r.evicted * probes.PAGE,
                "recently_evicted_bytes": None if r.recently_evicted is None else r.recently_evicted * probes.PAGE,
            })
        return shards

    def _shard_reads(self, disk: int, slow: bool) -> str:
        """Whose disk reads ``disk`` (the process tree's, this interval) are, as far as the
        shards' residency tells: ``"none"`` (the shards were whole in the page cache at the
        last two residency rounds: no shard page was read from disk, whatever the tree
        read), ``"others"`` (between the last two rounds the tree read far more than the
        shards' residency grew: a checkpoint, a tokenizer, another data set), else
        ``"shards"``. Judged at each residency round; the verdict holds until the next."""
        self._disk_total += disk
        if slow and self._shards:
            size = sum(s["size"] for s in self._shards)
            resident = sum(s["cached"] for s in self._shards)
            prev, self._round = self._round, (resident, size, self._disk_total)
            whole = size > 0 and resident >= size - probes.PAGE * len(self._shards)
            if prev is None:
                self._reads = "none" if whole else "shards"
            else:
                grew = max(0, resident - prev[0])
                read = self._disk_total - prev[2]
                if whole and prev[0] >= prev[1] - probes.PAGE * len(self._shards):
                    self._reads = "none"
                elif read > 4 * grew + (8 << 20):  # readahead alone stays within a few times
                    self._reads = "others"
                else:
                    self._reads = "shards"
        return self._reads

    def _page_cache(self, disk: int, page_bytes: int, gathered: int, dt: float, slow: bool) -> dict[str, Any]:
        if slow:
            self._shards = self._residency()
        shards = self._shards
        evicted = [s["evicted_bytes"] for s in shards if s["evicted_bytes"] is not None]
        recent = [s["recently_evicted_bytes"] for s in shards if s["recently_evicted_bytes"] is not None]
        reads = self._shard_reads(disk, slow) if self.manifest else "shards"
        if page_bytes <= 0:
            hit = None
        elif reads == "none":
            hit = 1.0  # every shard page was in the page cache: the tree's reads are other files
        elif reads == "others":
            hit = None  # unknown: most of what the tree read is not the shards
        else:
            hit = max(0.0, 1.0 - disk / page_bytes)
        return {
            "hit_ratio": hit,
            # "none": the shards were resident, the disk reads are other files'; "others":
            # other files' reads dominate (hit unknown); "shards": reads counted as the shards'.
            "disk_reads_of": reads,
            "disk_read_bytes": disk,
            "disk_read_bytes_per_s": _rate(disk, dt),
            "page_bytes": page_bytes,
            "page_bytes_per_s": _rate(page_bytes, dt),
            "read_amplification": None if gathered <= 0 else disk / gathered,
            # A cold read cannot fetch less than the whole pages its windows span: for 2 KiB
            # windows ~1.5 pages each, so amp >= ~3 on a cold random epoch.
            "page_floor": None if gathered <= 0 or page_bytes <= 0 else page_bytes / gathered,
            "dataset_bytes": sum(s["size"] for s in shards),
            "resident_bytes": sum(s["cached"] for s in shards),
            "evicted_bytes": sum(evicted) if evicted else None,
            "recently_evicted_bytes": sum(recent) if recent else None,
            "method": shards[0]["method"] if shards else None,
            "shards": shards,
        }

    def _run(self, slots: list[dict[str, int]], alive: bool, bps: float | None) -> dict[str, Any]:
        m = self.manifest
        trainer = _loop_slot(slots)  # the training loop's position, not the prefetch thread's
        if not m:  # --pid mode: nothing says whether it iterates
            return {"dir": None, "pid": self.pid, "alive": alive, "status": "attached" if alive else "ended"}
        iterating = bool(trainer and trainer["iterating"])
        out: dict[str, Any] = {
            "dir": self.run_dir, "pid": self.pid, "alive": alive,
            "status": ("running" if iterating else "idle") if alive else "ended",
        }
        for k in ("mode", "seq_len", "batch_size", "num_workers", "rank", "world_size", "seed", "epochs", "steps_per_epoch"):
            out[k] = m.get(k)
        out["prefetch"] = m.get("prefetch")
        if m.get("mixture"):
            out.update(self._mixture(m, trainer))
            return out
        spe, step_samples = m["steps_per_epoch"], m["step_samples"]
        epoch = trainer["epoch"] if trainer else 0
        step = (trainer["offset"] // step_samples) if trainer else 0
        # Packed rows: steps_per_epoch is a bound on the epoch's steps, so the share done and
        # the time left from it would be plausible wrong numbers: unknown.
        exact = m.get("steps_per_epoch_exact") is not False
        out.update(epoch=epoch, step=step, steps_exact=exact, progress=(step / spe if spe else 0.0) if exact else None,
                   eta_s=(spe - step) / bps if bps and exact else None)
        return out

    def _mixture(self, m: dict[str, Any], loop: dict[str, Any] | None) -> dict[str, Any]:
        """A mixture's position: global step, the primary source's epoch and progress, and one
        row per source (its windows, tokens and source-epoch, the share realised and the share
        the schedule asked for so far, its weight now), from the loop's slot.

        Counts the slot does not hold (not iterated yet, a stats file without a source block
        for each source of the manifest) are ``None``: shown as unknown, never as zero.
        """
        mix = m["mixture"]
        names = [s["name"] for s in mix["sources"]]
        report = metrics.mixture_report(m, loop)
        unknown = dict.fromkeys(("windows", "tokens", "epoch", "weight", "target", "share"))
        sources = report if report is not None else [
            {"name": s["name"], **unknown, "max_epochs": s.get("max_epochs")} for s in mix["sources"]
        ]
        primary = mix.get("primary")
        progress = epoch = None
        if primary is not None and loop is not None:
            src = mix["sources"][names.index(primary)]
            epoch = loop["epoch"]
            # packed rows: windows_per_epoch bounds an epoch's rows, it is not their count; the
            # share of the epoch read would be a plausible wrong number: unknown
            if src.get("epoch_known", True):
                progress = min(1.0, loop["offset"] / src["windows_per_epoch"])
        return {
            "mixture": {"primary": primary, "sources": sources},
            "epoch": epoch, "step": None if report is None else loop["sources"]["step"],  # type: ignore[index]
            "progress": progress, "eta_s": None,  # the primary's rate is not measured: unknown
        }

    def _ended(self, now: float) -> Snapshot:
        """The last snapshot with the final counters (the stats file read once more); rates blank."""
        last = self._last
        assert last is not None
        snap = {**last, "time": now, "interval_s": 0.0}
        slots = self.stats.slots() if self.stats else []
        tp = last.get("throughput")
        if tp is not None:
            loop = _loop_slot(slots)
            snap["throughput"] = {
                **tp, "tokens": loop["tokens"] if loop else tp["tokens"], "batches": loop["batches"] if loop else tp["batches"],
                "tokens_per_s": None, "batches_per_s": None, "wait_fraction": None, "prefetch_thread_wait_fraction": None,
                "workers": [{**w, "alive": False, "batches_per_s": None, "tokens_per_s": None} for w in tp["workers"]],
            }
        snap["run"] = {**self._run(slots, False, None), "eta_s": None} if self.manifest else {**last["run"], "alive": False, "status": "ended"}
        pc = last["page_cache"]
        snap["page_cache"] = {**pc, "hit_ratio": None, "disk_read_bytes_per_s": None, "page_bytes_per_s": None, "read_amplification": None}
        # No process left: no memory figure is live; blank, not the last ones beside "no processes".
        snap["memory"] = {
            **{k: (None if k.endswith("_total") else v) for k, v in last["memory"].items()},
            "processes": [], "cpu_total": None, "cpu_reaped": None,
        }
        return snap

    def _alive(self) -> bool:
        """Whether the trainer (or ``pid``) still runs: :func:`streamtok.metrics.pid_alive`
        (the start time recorded in the manifest) once per process start seen, then its
        ``/proc`` stat each sample: the same start, not a zombie (~20 µs; psutil ~0.2 ms)."""
        if not self.local:
            return False
        try:
            stat = probes.faults(self.pid)
        except (ProcessLookupError, PermissionError):
            return False
        if stat["state"] in ("Z", "X"):
            return False
        if stat["start_s"] != self._started:
            if not metrics.pid_alive(self.pid, self.manifest.get("pid_start")):
                return False
            self._started = stat["start_s"]
        return True

    def sample(self, *, fresh: bool = False, baseline: bool = False) -> Snapshot:
        """One snapshot; rates are over the time since the previous call (0 on the first).

        Once the trainer is gone: the final counters, read once more, with rates blanked.

        Args:
            fresh: run the slow probes (PSS, residency) now whatever their schedule, so that
                every figure is of this snapshot's time (``--once``).
            baseline: a sample only read for the counters the next one's rates start from:
                the slow probes are left to the next (``--once``).
        """
        now = time.time()
        alive = self._alive()
        if not alive and self._last is not None:
            if self._final is None:
                self._final = self._ended(now)
            return self._final
        dt = now - self._prev_t if self._prev_t is not None else 0.0
        slow = fresh or (not baseline and now >= self._slow_at)
        pss = slow and (fresh or self._rounds % max(1, self.pss_every) == 0)
        if slow:
            self._slow_time, self._rounds = now, self._rounds + 1
        if pss:
            self._pss_time = now
        cpu0 = time.thread_time() if slow else 0.0
        slots = self.stats.slots() if self.stats else []
        pids = probes.process_tree(self.pid) if alive else []
        if self.stats:
            throughput, page_bytes, gathered = self._throughput(slots, dt, pids)
        else:
            throughput, page_bytes, gathered = None, 0, 0
        disk = self._disk_read(pids)
        cache = self._page_cache(disk, page_bytes, gathered, dt, slow)
        if self._prev_t is not None:
            h = self.histories
            if throughput is not None:
                h["wait"].append(throughput["wait_fraction"])
            h["disk"].append(cache["disk_read_bytes_per_s"])
            if cache["hit_ratio"] is not None:
                h["hit"].append(cache["hit_ratio"])
        snap = {
            "time": now,
            "interval_s": dt,
            # When the slow probes last ran (shard residency; PSS): their figures are of then.
            "sampling": {"interval_s": dt, "slow_interval_s": self.slow_interval_s, "slow_time": self._slow_time,
                         "pss_time": self._pss_time},
            "run": self._run(slots, alive, throughput["batches_per_s"] if throughput else None),
            "throughput": throughput,
            "memory": self._memory(pids, slots, dt, pss),
            "page_cache": cache,
            "histories": {k: list(v) for k, v in self.histories.items()},
        }
        if slow:  # the slow probes ran in this sample: most of its CPU time
            self._slow_at = now + max(self.slow_interval_s, 400 * (time.thread_time() - cpu0))
        self._prev_t = now
        self._last = snap
        return snap
