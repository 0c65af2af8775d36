"""streamtok_monitor probes against the real OS, formatters as plain functions, the
per-PID bookkeeping of the sampler on scripted readings."""

import os
import time

import numpy as np
import pytest
from streamtok_monitor import format as fmt
from streamtok_monitor import probes, watcher

SIZE = 8 << 20  # 8 MiB: big enough that readahead cannot pull it in by accident


@pytest.fixture
def cold_file(tmp_path):
    path = tmp_path / "blob.bin"
    np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8).tofile(path)
    _evict(path)
    return str(path)


def _evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.sync()  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read_all(path):
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


@pytest.mark.parametrize("probe", [probes.residency, probes.mincore])
def test_residency_rises_on_read_and_falls_on_dontneed(cold_file, probe):
    before = probe(cold_file)
    assert before.size == SIZE and before.fraction < 0.5
    _read_all(cold_file)
    warm = probe(cold_file)
    assert warm.fraction > 0.95
    _evict(cold_file)
    assert probe(cold_file).fraction < 0.5


def test_cachestat_and_mincore_agree(cold_file):
    _read_all(cold_file)
    cs = probes.cachestat(cold_file)
    if cs is None:
        pytest.skip("kernel without cachestat (needs Linux 6.5+)")
    assert cs.method == "cachestat" and cs.evicted is not None
    assert abs(cs.cached - probes.mincore(cold_file).cached) <= 64 * 4096


def test_cold_memmap_read_moves_major_faults_and_disk_reads(cold_file):
    pid = os.getpid()
    faults0, io0 = probes.faults(pid), probes.io(pid)
    mm = np.memmap(cold_file, dtype=np.uint8, mode="r")
    total = int(mm[:: 4096].sum())  # one byte per page: every page faulted in
    faults1, io1 = probes.faults(pid), probes.io(pid)
    assert total >= 0
    assert faults1["majflt"] > faults0["majflt"]
    # read_bytes saw the file come from the device (readahead may read a little more).
    assert io1["read_bytes"] - io0["read_bytes"] >= SIZE * 0.9
    del mm


def test_memory_splits_file_backed_rss(cold_file):
    pid = os.getpid()
    before = probes.memory(pid)
    mm = np.memmap(cold_file, dtype=np.uint8, mode="r")
    int(mm[:: 4096].sum())
    after = probes.memory(pid)
    assert after["rss_file"] - before["rss_file"] >= SIZE * 0.9
    assert after["rss_anon"] - before["rss_anon"] < SIZE * 0.5
    assert 0 < after["uss"] <= after["pss"] <= after["rss"]
    del mm


def test_meminfo_and_missing_process():
    info = probes.meminfo()
    assert 0 < info["MemAvailable"] <= info["MemTotal"]
    with pytest.raises(ProcessLookupError):
        probes.memory(999_999_999)
    assert probes.process_tree(999_999_999) == []
    assert probes.process_tree(os.getpid())[0] == os.getpid()


@pytest.mark.parametrize(
    "n,text",
    [(None, "-"), (0, "0B"), (1023, "1023B"), (1536, "1.5KiB"), (150 << 20, "150MiB"), (3 << 30, "3.0GiB")],
)
def test_human_bytes(n, text):
    assert fmt.human_bytes(n) == text


@pytest.mark.parametrize(
    "n,text", [(None, "-"), (0, "0"), (2.5, "2.5"), (999, "999"), (1234, "1.23K"), (12_345_678, "12.3M"), (456e6, "456M")]
)
def test_human_count(n, text):
    assert fmt.human_count(n) == text


@pytest.mark.parametrize("s,text", [(None, "-"), (-1, "-"), (45, "45s"), (185, "3m05s"), (7620, "2h07m")])
def test_duration(s, text):
    assert fmt.duration(s) == text


@pytest.mark.parametrize(
    "values,width,top,text",
    [
        ([100, 97, 103], 3, None, "███"),  # ±3% noise from zero: flat, not a stall
        ([0, 50, 100], 3, None, " ▄█"),
        ([10, 10], 4, 80, "  ▁▁"),
        ([], 3, None, "   "),
        ([0, 0], 2, None, "  "),
    ],
)
def test_spark_starts_at_zero(values, width, top, text):
    assert fmt.spark(values, width, top) == text


def test_bar_and_percent_and_shorten():
    assert fmt.bar(0, 4) == "····" and fmt.bar(1, 4) == "████" and fmt.bar(2, 4) == "████"
    assert fmt.bar(0.5, 4) == "██··" and fmt.bar(0.625, 4) == "██▌·"
    assert fmt.percent(None) == "-" and fmt.percent(0.1234) == "12.3%"
    assert fmt.shorten("abcdefghij", 5) == "ab…ij" and fmt.shorten("abc", 5) == "abc"


def test_disk_reads_of_an_exiting_worker_are_not_counted_twice(monkeypatch):
    """Worker 11 reads 300 B, exits; the kernel adds its 300 B to the parent's counter."""
    readings = iter([
        {10: 1000, 11: 0},  # baseline
        {10: 1000, 11: 200},  # the worker read 200
        {10: 1000, 11: 300},  # 100 more
        {10: 1300},  # worker reaped: parent jumps by the worker's 300
        {10: 1350, 12: 40},  # parent reads 50 itself; a new worker read 40 since fork
    ])
    current: dict = {}

    def tree(pid):
        current.clear()
        current.update(next(readings))
        return list(current)

    monkeypatch.setattr(probes, "process_tree", tree)
    monkeypatch.setattr(probes, "io", lambda pid: {"read_bytes": current[pid]})
    s = watcher.Sampler.__new__(watcher.Sampler)
    s.pid, s._io, s._reaped = 10, {}, 0
    got = [s._disk_read(probes.process_tree(10)) for _ in range(5)]
    assert got == [0, 200, 100, 0, 90]
    assert sum(got) == 390  # 300 by the old worker, 50 by the parent, 40 by the new one


def test_watcher_reports_a_failing_sample_and_keeps_going():
    class Flaky:
        calls = 0

        def sample(self):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise OSError("boom")
            return {"n": Flaky.calls}

    got, errors = [], []
    w = watcher.Watcher(Flaky(), got.append, interval_s=0.01, on_error=errors.append)
    w.start()
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    w.join(timeout=5)
    assert [str(e) for e in errors] == ["boom"] and got[:2] == [{"n": 2}, {"n": 3}]
    assert not w.is_alive()


def test_status_fields_picked_as_the_full_parse_reads_them():
    text = probes._read(f"/proc/{os.getpid()}/status")
    full = probes._kv_kib(text)
    assert probes._pick_kib(text, probes._STATUS_KEYS) == {k: full[k] for k in probes._STATUS_KEYS if k in full}
    assert probes._pick_kib("Name:\tx\nVmRSS:\t12 kB\nRssAnon:\tbad kB\n", ("VmRSS", "RssAnon", "RssFile")) == {"VmRSS": 12 * 1024}
