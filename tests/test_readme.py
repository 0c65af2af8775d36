"""Every ```python block of README.md runs as a newcomer pastes it, on what the README's first command makes.

One prepared directory serves the module: the working directory a newcomer has after the
README's first command. ``examples/demo.py`` (that command's last step, with 2 training steps)
tokenizes the shipped plays into ``data/shards`` and trains, checkpointing into
``runs/shakespeare``; while it trains, the ``streamtok-monitor`` command it prints is run
(``--once``: a snapshot instead of the full-screen app). The README's own ``bash`` lines make
the other data its snippets read (``data/histories``), and the object-storage blocks read the
demo's shards from a loopback S3 server (``tests/s3_server.py``): nothing leaves 127.0.0.1.

Each block runs unchanged in a fresh interpreter in that directory. The one value replaced is
the S3 endpoint a block names (``http://127.0.0.1:9000``, a local MinIO's port), by this
session's server. A block is named by the heading above it (``#2`` for the second under one
heading); every block must be in ``RUN`` or in ``ELSEWHERE`` with the test that runs it, so a
block added to the README fails :func:`test_every_block_is_run_or_excused` until it is one or
the other. The Speed section's bench ratios are checked against their sources (the chart's
``docs/bench.json`` and the table).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from s3_server import s3  # noqa: F401  (the session's loopback S3 fixture, started only for the S3 blocks)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = sysconfig.get_path("scripts")  # this interpreter's console scripts: streamtok, streamtok-monitor
LOCAL_S3 = "http://127.0.0.1:9000"  # the endpoint the README's storage_options example names


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README: its language, the heading above it and its text."""

    lang: str
    heading: str
    nth: int  # 1 for the first block of this language under the heading
    code: str

    @property
    def id(self) -> str:
        return self.heading if self.nth == 1 else f"{self.heading} #{self.nth}"


def blocks(lang: str) -> list[Block]:
    """The README's ``lang`` blocks in order, each named by the nearest heading above it."""
    found: list[Block] = []
    heading, fence, body, counts = "", None, [], {}
    for line in README.read_text().splitlines():
        if fence is None:
            if line.startswith("```"):
                fence, body = line[3:].strip(), []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            if fence == lang:
                counts[heading] = counts.get(heading, 0) + 1
                found.append(Block(lang, heading, counts[heading], "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    return found


@dataclass(frozen=True)
class Run:
    """How a block is run here: ``s3`` needs the loopback bucket; ``prints`` must be in its output."""

    s3: bool = False
    prints: tuple[str, ...] = ()


RUN: dict[str, Run] = {
    "A 60-second tour": Run(),
    "A 60-second tour #2": Run(),
    "Naming any batch: `locate`": Run(prints=("data/shards/shakespeare_train_0000",)),
    "Mixtures": Run(prints=("{'plays': 26, 'histories': 6}",)),
    "Documents: rows that know where documents start": Run(),
    "torchdata nodes": Run(),
    "Shards in object storage: `s3://`, `gs://`, `az://`, `https://`, `hf://`": Run(s3=True),
    "Reading from object storage": Run(s3=True),
}
# Blocks run by another test, and why not here: accelerate, lightning and torchtitan cost ~10 s
# of imports each, already paid by that test (which runs each snippet in its own process too).
ELSEWHERE: dict[str, str] = {
    "Training frameworks": "tests/frameworks/test_frameworks_readme.py (HF Accelerate; 2-process runs: test_frameworks_accelerate.py)",
    "Training frameworks #2": "tests/frameworks/test_frameworks_readme.py (Lightning; 2-process ddp: test_frameworks_lightning.py)",
    "Training frameworks #3": "tests/frameworks/test_frameworks_readme.py (torchtitan; DP 1 <-> 2: test_frameworks_torchtitan.py)",
}


def by_id(block_id: str, lang: str = "python") -> Block:
    (block,) = [b for b in blocks(lang) if b.id == block_id]
    return block


@dataclass
class Newcomer:
    """The prepared directory, its environment, and what the demo printed and the monitor showed."""

    dir: Path
    env: dict[str, str]
    demo_pid: int = 0
    demo_stdout: str = ""
    live_command: list[str] = field(default_factory=list)  # the monitor command printed when training starts
    monitor: subprocess.CompletedProcess | None = None


def run_demo(home: Newcomer) -> None:
    """The demo, as the README's first command runs it; ``streamtok-monitor --once`` while it is live.

    The demo is stopped (SIGSTOP) from the line that prints the monitor command, so its run is
    live whatever the machine's speed while the monitor looks, then continued to the end.
    """
    with open(home.dir / "demo.stderr", "w") as stderr:
        demo = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "demo.py"), "--steps", "2", "--shards", "data/shards",
             "--run", "runs/shakespeare"],
            cwd=home.dir, env=home.env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    home.demo_pid = demo.pid
    lines = []
    try:
        for line in demo.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "watch live with:" in line and home.monitor is None:
                home.live_command = shlex.split(line.split("watch live with:", 1)[1], comments=True)
                os.kill(demo.pid, signal.SIGSTOP)
                try:
                    home.monitor = subprocess.run([*home.live_command, "--once"], cwd=home.dir, env=home.env,
                                                  capture_output=True, text=True, timeout=60)
                finally:
                    os.kill(demo.pid, signal.SIGCONT)
        assert demo.wait(timeout=300) == 0, (home.dir / "demo.stderr").read_text()[-3000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdout.close()  # type: ignore[union-attr]
    home.demo_stdout = "".join(lines)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Newcomer:
    """The README's working directory after its first command, plus the data its bash lines make."""
    where = tmp_path_factory.mktemp("newcomer")
    (where / "data").mkdir()
    (where / "data" / "shakespeare").symlink_to(ROOT / "data" / "shakespeare")  # the plays, as cloned
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "PATH": BIN + os.pathsep + env.get("PATH", ""),
        "STREAMTOK_RUN_DIR": str(where / "run-root"),  # this demo's runs alone: the monitor must find it
        "STREAMTOK_CACHE_DIR": str(where / "cache"),  # nothing written to the user's ~/.cache
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",  # the demo's lines arrive as printed
    })
    home = Newcomer(where, env)
    run_demo(home)
    tokenize = by_id("Mixtures", "bash")
    done = subprocess.run(["bash", "-e", "-c", tokenize.code], cwd=where, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def my_bucket(newcomer: Newcomer, request: pytest.FixtureRequest) -> dict[str, str]:
    """The demo's shards at ``s3://my-bucket/shards/`` on the session's loopback S3; its AWS_* environment."""
    s3 = request.getfixturevalue("s3")
    s3.create_bucket("my-bucket")
    s3.upload_dir(newcomer.dir / "data" / "shards", "my-bucket", "shards/")
    assert s3.endpoint.startswith("http://127.0.0.1:")
    return {"endpoint": s3.endpoint, **s3.env()}


def test_blocks_are_found_with_their_headings():
    ids = [b.id for b in blocks("python")]
    assert ids[:2] == ["A 60-second tour", "A 60-second tour #2"] and "Mixtures" in ids
    assert all("```" not in b.code and b.code.strip() for b in blocks("python"))


def test_every_block_is_run_or_excused():
    """A README block that is neither run here nor named with the test that runs it fails here."""
    ids = [b.id for b in blocks("python")]
    assert len(ids) == len(set(ids)), "two blocks share an id"
    assert not set(RUN) & set(ELSEWHERE)
    assert set(ids) == set(RUN) | set(ELSEWHERE), (
        f"not run nor excused: {sorted(set(ids) - set(RUN) - set(ELSEWHERE))}; "
        f"listed but gone from README.md: {sorted((set(RUN) | set(ELSEWHERE)) - set(ids))}")


def test_the_blocks_run_elsewhere_are_the_ones_that_test_runs():
    """ELSEWHERE is checked, not trusted: test_frameworks_readme.py runs exactly those blocks' text."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fw_readme", ROOT / "tests" / "frameworks" / "test_frameworks_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [by_id(i).code for i in ELSEWHERE] == module._snippets()


def test_no_block_has_a_placeholder():
    """``...`` runs (it is Python's Ellipsis) but stands for code the reader must guess: none in code."""
    import io
    import tokenize

    for b in blocks("python"):
        tokens = tokenize.generate_tokens(io.StringIO(b.code).readline)
        assert not [t for t in tokens if t.type == tokenize.OP and t.string == "..."], b.id


def test_no_block_reaches_past_loopback():
    """Only the object-storage blocks name a URL, and the only host they name is 127.0.0.1."""
    for b in blocks("python"):
        if b.id in RUN and not RUN[b.id].s3:
            assert "://" not in b.code, b.id
    for b in blocks("python"):
        for host in re.findall(r"https?://([^/:\"']+)", b.code):
            if b.id in RUN:
                assert host == "127.0.0.1", (b.id, host)


@pytest.mark.slow
@pytest.mark.parametrize("block_id", list(RUN), ids=lambda i: re.sub(r"\W+", "-", i).strip("-").lower()[:32])
def test_block_runs_as_pasted(block_id: str, newcomer: Newcomer, request: pytest.FixtureRequest):
    block, how = by_id(block_id), RUN[block_id]
    code, env = block.code, dict(newcomer.env)
    if how.s3:
        bucket = request.getfixturevalue("my_bucket")
        env.update({k: v for k, v in bucket.items() if k.startswith("AWS_")})
        code = code.replace(LOCAL_S3, bucket["endpoint"])
    path = newcomer.dir / ("snippet_" + re.sub(r"\W+", "_", block_id).strip("_") + ".py")
    path.write_text(code)
    done = subprocess.run([sys.executable, path.name], cwd=newcomer.dir, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"README block {block_id!r} failed:\n{done.stderr[-4000:]}"
    for text in how.prints:
        assert text in done.stdout, (text, done.stdout[-2000:])


@pytest.mark.slow
def test_the_demos_monitor_command_shows_its_run(newcomer: Newcomer):
    """The monitor command the demo prints runs as printed and shows the demo's own run."""
    assert newcomer.live_command, newcomer.demo_stdout
    assert newcomer.monitor is not None and newcomer.monitor.returncode == 0, newcomer.monitor.stderr
    shown = newcomer.monitor.stdout
    assert f"pid {newcomer.demo_pid}" in shown and "seq_len 64" in shown and "B 16" in shown, shown
    # The venv the first command made is not activated: the command names the installed script.
    if os.path.exists(os.path.join(BIN, "streamtok-monitor")):
        assert newcomer.live_command[0] == os.path.join(BIN, "streamtok-monitor")
    # The hint at the end is the same command, and pastes into a shell as it is printed.
    (line,) = [ln for ln in newcomer.demo_stdout.splitlines() if ln.startswith("monitor:")]
    hint = line[len("monitor:"):]
    assert shlex.split(hint, comments=True) == newcomer.live_command
    assert subprocess.run(["bash", "-n", "-c", hint]).returncode == 0, hint


@pytest.mark.slow
def test_locate_command_names_a_batch_of_the_demo_checkpoint(newcomer: Newcomer):
    """The README's ``streamtok locate`` line, on the checkpoint the demo wrote."""
    (line,) = by_id("Naming any batch: `locate`", "bash").code.strip().splitlines()
    done = subprocess.run(["bash", "-e", "-c", line], cwd=newcomer.dir, env=newcomer.env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shakespeare_train_0000" in done.stdout, done.stdout[-2000:]


def _speed_section() -> str:
    text = README.read_text()
    section = text[text.index("## Speed, measured"):]
    return " ".join(section[: section.index("\n## ", 1)].split())


def _make_pictures():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_pictures
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return make_pictures


def test_the_bench_ratios_the_readme_quotes_are_its_chart_and_table():
    """The table is docs/bench.json's (the chart's), and every ratio quoted under it is that run's."""
    import json

    from streamtok.bench import table

    text = _speed_section()
    assert "one run" in text, "the Speed section no longer says where its numbers come from"
    by_name = {r["name"]: r for r in json.loads((ROOT / "docs" / "bench.json").read_text())["results"]}
    rows = table([by_name[name] for name in _make_pictures().TABLE if name in by_name])
    assert rows in README.read_text(), "the README's table is not docs/bench.json's: rerun docs/make_pictures.py"
    x = {name: f"{r['x_baseline']:.1f}" for name, r in by_name.items()}
    first = re.search(r"delivers \(x, y\) int64 at ([\d.]+)x nanoGPT in shuffle mode \(([\d.]+)x in random mode, "
                      r"([\d.]+)x sequential\); the compact uint16 output ([\d.]+)x \(shuffle\) and ([\d.]+)x "
                      r"\(random\)\. The vectorised-gather floor is ([\d.]+)x", text)
    workers = re.search(r"peer drops from ([\d.]+)x to ([\d.]+)x\); streamtok with 2 workers still delivers "
                        r"([\d.]+)x nanoGPT in shuffle mode \(([\d.]+)x random\)", text)
    assert first and workers, "the ratios under the table moved: update this test with them"
    assert first.groups() + workers.groups() == tuple(x[name] for name in (
        "streamtok:mode=shuffle,workers=0", "streamtok:mode=random,workers=0", "streamtok:mode=sequential,workers=0",
        "streamtok:mode=shuffle,workers=0,out=compact", "streamtok:mode=random,workers=0,out=compact", "floor",
        "mapstyle:workers=0", "mapstyle:workers=2", "streamtok:mode=shuffle,workers=2", "streamtok:mode=random,workers=2"))
    prefetch = by_name["streamtok:mode=shuffle,workers=2,out=prefetch"]
    assert f"`CUDAPrefetcher`: {prefetch['trainer_us']:.0f} µs per" in text
    assert f"{100 * prefetch['wait_fraction']:.1f}% of a 5 ms step" in text


def test_make_pictures_rewrites_the_readme_table_from_its_json(tmp_path):
    """After a bench run the table is streamtok.bench.table of the same JSON the chart is drawn from."""
    import json

    from streamtok.bench import table

    pictures = _make_pictures()
    report = json.loads((ROOT / "docs" / "bench.json").read_text())
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text())
    pictures.update_readme(report, str(copy))
    before, after = README.read_text().split("\n"), copy.read_text().split("\n")
    start = next(k for k, line in enumerate(before) if line.startswith("| contestant |"))
    by_name = {r["name"]: r for r in report["results"]}
    rows = table([by_name[name] for name in pictures.TABLE if name in by_name]).split("\n")
    assert after[start:start + len(rows)] == rows and rows[2].startswith("| nanogpt |") and rows[3].startswith("| floor |")
    old_end = next(k for k in range(start, len(before)) if not before[k].startswith("|"))
    assert after[:start] == before[:start] and after[start + len(rows):] == before[old_end:]


# Every ```bash block of the README, and what runs its commands as written (not retyped).
BASH_RUN: dict[str, str] = {
    "streamtok": ".ci/run (the two opening commands, from a fresh virtual environment; it checks the README shows them)",
    "Naming any batch: `locate`": "tests/test_readme.py::test_locate_command_names_a_batch_of_the_demo_checkpoint",
    "Mixtures": "tests/test_readme.py::newcomer (the fixture every python block runs after)",
    "Preparing data: `streamtok tokenize`, `download`, `inspect`":
        "tests/prep/test_prep_readme.py::test_the_hub_block_runs_as_written_against_a_local_hub",
    "Preparing data: `streamtok tokenize`, `download`, `inspect` #2":
        "tests/prep/test_prep_readme.py::test_the_ray_line_runs_as_written_on_a_local_ray_head "
        "(and ::test_the_slurm_array_script_runs_as_slurm_runs_it: --finalize; sbatch itself is not run)",
    "Preparing data: `streamtok tokenize`, `download`, `inspect` #3":
        "tests/prep/test_prep_readme.py::test_the_slurm_array_script_runs_as_slurm_runs_it (examples/tokenize_array.sbatch)",
}


def test_every_bash_block_is_run_by_a_test_that_exists():
    """A bash block added to the README fails here until a test runs it; each named test is there."""
    ids = [b.id for b in blocks("bash")]
    assert len(ids) == len(set(ids)) and set(ids) == set(BASH_RUN), (
        f"not run: {sorted(set(ids) - set(BASH_RUN))}; listed but gone: {sorted(set(BASH_RUN) - set(ids))}")
    for block_id, where in BASH_RUN.items():
        for name in re.findall(r"(?:^|\(and )([\w/.]+)(?:::(\w+))?", where):
            path, func = name
            text = (ROOT / path).read_text()
            assert not func or re.search(rf"^def {func}\(", text, re.M), (block_id, where)
    ci = (ROOT / ".ci" / "run").read_text()
    assert all(line in ci for line in by_id("streamtok", "bash").code.strip().splitlines())


def test_the_nanochat_figures_are_the_ones_results_md_measured():
    """The Documents section's nanochat comparison quotes benchmarks/RESULTS.md's runs, not older ones."""
    import math

    results = " ".join((ROOT / "benchmarks" / "RESULTS.md").read_text().split())
    text = " ".join(README.read_text().split())
    speed = {t: [float(r) for r in re.findall(r"[\d.]+(?=x)", row)]
             for t, row in re.findall(r"\| (1024|2048) \| [\d.]+M, [\d.]+M \| [\d.]+M, [\d.]+M \| ([\d.x, ]+) \|", results)}
    assert set(speed) == {"1024", "2048"} and all(len(r) == 2 for r in speed.values()), speed
    lo = {t: math.floor(min(r)) for t, r in speed.items()}
    hi = {t: math.floor(max(r)) for t, r in speed.items()}
    claim = f"{lo['1024']}-{hi['1024']}x nanochat's tokens/s at T=1024 and {lo['2048']}-{hi['2048']}x at T=2048"
    assert claim in text, f"README should say: {claim}"
    crop = dict((t, (n, p)) for t, n, p in re.findall(r"\| (1024|2048) \| ([\d.]+)% \| ([\d.]+)% \|", results))
    assert (f"leaves out {crop['1024'][1]}% of an epoch's tokens at T=1024 and {crop['2048'][1]}% at T=2048, "
            f"nanochat's best fit {crop['1024'][0]}% and {crop['2048'][0]}%") in text


def test_every_repository_file_the_readme_names_exists():
    """A path into the repository (tests/, benchmarks/, docs/, examples/, streamtok/, monitor/) names a file
    or folder that is there: the tests moved into folders once and the README kept the old names."""
    text = README.read_text()
    named = {p.rstrip(".,") for p in re.findall(r"(?<![\w./~-])(?:tests|benchmarks|docs|examples|streamtok|monitor)/[\w./-]*", text)}
    named = {p for p in named if p.endswith((".py", ".md", ".sbatch", ".json", ".png", ".svg", "/"))}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README.md names files that are not in the repository: {missing}"
    assert "tests/frameworks/test_frameworks_readme.py" in named and "examples/tokenize_array.sbatch" in named
