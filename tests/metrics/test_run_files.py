"""Files under the run root are read only if regular and small: a FIFO or /dev/zero never hangs a loader.

Each check that could hang runs in a subprocess with a timeout, so a regression fails here
instead of hanging CI.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest
from _util import make_shards

from streamtok.metrics.publish import list_runs

LIMIT_S = 60  # a hang is a failure; a pass takes a few seconds


def _manifest(created: float = None, pid: int = 1) -> dict:
    return {"layout_version": 1, "pid": pid, "created": time.time() if created is None else created}


def _run_dir(root, name: str, manifest: dict | None = None):
    d = root / name
    d.mkdir(parents=True)
    if manifest is not None:
        (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.fixture
def hostile_root(tmp_path):
    """A run root with one good run, a FIFO named manifest.json and one linked to /dev/zero."""
    root = tmp_path / "runs"
    _run_dir(root, "good", _manifest())
    os.mkfifo(_run_dir(root, "fifo") / "manifest.json")
    os.symlink("/dev/zero", _run_dir(root, "zero") / "manifest.json")
    _run_dir(root, "far-future", _manifest(created=1e300))
    return root


def _python(code: str, root, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "STREAMTOK_RUN_DIR": str(root), **env},
        capture_output=True, text=True, timeout=LIMIT_S,
    )


def test_listing_runs_skips_fifos_and_devices_without_blocking(hostile_root):
    out = _python("from streamtok.metrics.publish import list_runs; print([r.dir.rsplit('/', 1)[1] for r in list_runs()])", hostile_root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['good']"


def test_creating_a_loader_with_metrics_does_not_hang(hostile_root, tmp_path):
    make_shards(tmp_path / "data", [3000])
    code = (
        "import streamtok\n"
        f"loader = streamtok.loader({str(tmp_path / 'data')!r}, seq_len=16, batch_size=2, split='all', metrics=True)\n"
        "print(sum(1 for _ in loader))\n"
    )
    out = _python(code, hostile_root)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 0


def test_monitor_list_neither_hangs_nor_tracebacks(hostile_root):
    monitor = [sys.executable, "-c", "import sys; from streamtok_monitor.cli import main; sys.exit(main(['--list']))"]
    out = subprocess.run(monitor, env={**os.environ, "STREAMTOK_RUN_DIR": str(hostile_root)}, capture_output=True, text=True, timeout=LIMIT_S)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "good" in out.stdout and "far-future" not in out.stdout


def test_read_manifest_names_what_it_refused(hostile_root):
    code = (
        "import sys\n"
        "from streamtok.metrics.publish import RunDirError, read_manifest\n"
        "for name in ('fifo', 'zero', 'far-future'):\n"
        "    try:\n"
        "        read_manifest(sys.argv[1] + '/' + name)\n"
        "    except RunDirError as e:\n"
        "        print(name, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(hostile_root)], capture_output=True, text=True, timeout=LIMIT_S)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    for line, what in zip(lines, ("FIFO", "symbolic link", "created")):
        assert what in line


def test_read_regular_refuses_what_is_not_a_small_regular_file(tmp_path):
    from streamtok._files import read_regular

    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    assert read_regular(f, 100) == b"x" * 100
    with pytest.raises(OSError, match="more than the 99") as e:
        read_regular(f, 99)
    assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError, match="directory"):
        read_regular(tmp_path, 100)
    os.symlink(f, tmp_path / "link")
    with pytest.raises(OSError, match="symbolic link"):
        read_regular(tmp_path / "link", 100)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="FIFO"):
        read_regular(tmp_path / "fifo", 100)  # returns at once: O_NONBLOCK, no writer needed
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent", 100)


@pytest.mark.parametrize("created", [1e300, -5.0, float("inf"), "yesterday", True])
def test_a_run_created_at_no_time_is_not_a_run(tmp_path, created):
    root = tmp_path / "runs"
    _run_dir(root, "odd", _manifest(created=created))
    _run_dir(root, "good", _manifest())
    assert [os.path.basename(r.dir) for r in list_runs(str(root))] == ["good"]
