"""The README's "Preparing data" command blocks, run as written, on 127.0.0.1 only.

Each command is read from README.md (the block under the heading), never retyped here; only
the environment differs from a user's:

- the Hub block (``tokenize``, ``download karpathy/...``, ``inspect``, ``tokenize hf://...
  --tokenizer meta-llama/...``) runs with ``HF_ENDPOINT`` set to the loopback Hub of
  ``tests/http_server.py``, ``HF_HOME`` in a temporary directory and ``HF_HUB_OFFLINE`` unset,
  so ``huggingface_hub`` makes its real requests (repo info, tree, HEAD and ranged GETs on
  ``resolve/``). The repos hold llm.c GPT-2 shards, parquet files and a real trained
  ``tokenizer.json`` with Llama 3's layout (over 65,536 ids, ``<|begin_of_text|>`` its BOS);
- the Ray line runs against a real Ray head started here (``ray start --head --block`` on
  127.0.0.1, its own ``RAY_TMPDIR``, so ``--address auto`` finds it and no other cluster);
- ``examples/tokenize_array.sbatch`` (which the README shows, and which must be that block's
  text) runs under bash once per index of its ``#SBATCH --array``, with the variables Slurm
  sets, then the README's ``--finalize`` line. ``sbatch`` itself is not run (no Slurm here).

Both multi-machine outputs must equal a one-process ``tokenize`` run's, byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _util import ROOT
from http_server import HUB_COMMIT, http_root, hub_repo  # noqa: F401  (http_root: the loopback server fixture)
from prep_helpers import expected_tokens, make_docs, output_bytes, train_tokenizer
from test_readme import BIN, by_id

from streamtok import MemmapReader, ShardLister
from streamtok._formats import MAGIC_LLAMA3, probe_shard, write_shard

HUB_BLOCK = "Preparing data: `streamtok tokenize`, `download`, `inspect`"
SCRIPT = ROOT / "examples" / "tokenize_array.sbatch"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """A user's environment with streamtok on PATH and no Hub, cloud, Ray or proxy settings of this machine
    (a proxy would relay the loopback requests elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "AWS_", "RAY_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update({"PATH": BIN + os.pathsep + env.get("PATH", ""), "STREAMTOK_CACHE_DIR": str(tmp / "cache"),
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def _commands(block_id: str, nth: int = 1) -> list[str]:
    """The commands of a README bash block: its lines that are not comments, continuations joined."""
    code = by_id(block_id if nth == 1 else f"{block_id} #{nth}", "bash").code
    return [c for c in (ln.strip() for ln in code.replace("\\\n", " ").splitlines()) if c and not c.startswith("#")]


def _bash(command: str, cwd: Path, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-e", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _tokens(directory: Path) -> np.ndarray:
    reader = MemmapReader(ShardLister(directory).split("all"))
    return np.concatenate([np.asarray(reader.shard_array(k), dtype=np.int64) for k in range(len(reader.infos))])


def _write_jsonl(path: Path, docs: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def _parquet(docs: list[str]) -> bytes:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": docs, "id": list(range(len(docs)))}), buf, row_group_size=40)
    return buf.getvalue()


def _shard_bytes(tmp: Path, n: int, seed: int) -> bytes:
    path = tmp / f"shard{seed}.bin"
    write_shard(path, np.random.default_rng(seed).integers(0, 50257, n, dtype=np.uint16))
    return path.read_bytes()


def _fineweb_edu(root: Path) -> list[list[str]]:
    """HuggingFaceFW/fineweb-edu on the local Hub: two sample/10BT parquet files and two others; their documents."""
    web = [make_docs(90, seed=60), make_docs(70, seed=61)]
    hub_repo(root, "HuggingFaceFW/fineweb-edu", {
        "sample/10BT/000_00000.parquet": _parquet(web[0]), "sample/10BT/001_00000.parquet": _parquet(web[1]),
        "sample/100BT/000_00000.parquet": _parquet(make_docs(5, seed=62)),
        "data/CC-MAIN-2024-10/000_00000.parquet": _parquet(make_docs(5, seed=63)), "README.md": b"# fineweb-edu\n"})
    return web


def test_the_hub_block_runs_as_written_against_a_local_hub(http_root, tmp_path):  # noqa: F811
    pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'streamtok[hf]')")
    commands = _commands(HUB_BLOCK)
    assert [c.split()[:2] for c in commands] == [["streamtok", "tokenize"], ["streamtok", "download"],
                                                 ["streamtok", "inspect"], ["streamtok", "tokenize"]], commands
    # The Hub: the repos the block names, each with files it must not fetch beside the ones it asks for.
    shards = {"edu_fineweb_val_000000.bin": _shard_bytes(tmp_path, 3000, 0)}
    shards.update({f"edu_fineweb_train_{k:06d}.bin": _shard_bytes(tmp_path, 4000 + k, k) for k in range(1, 5)})
    hub_repo(http_root.root, "karpathy/fineweb-edu-100B-gpt2-token-shards", shards)
    web = _fineweb_edu(http_root.root)
    tok_dir = train_tokenizer(tmp_path / "llama3-like", big=True)
    hub_repo(http_root.root, "meta-llama/Meta-Llama-3-8B", {
        name: (tok_dir / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}, kind="models")
    # The newcomer's directory: a corpus for the first line.
    work = tmp_path / "work"
    corpus = [make_docs(40, seed=70), make_docs(30, seed=71)]
    for k, docs in enumerate(corpus):
        _write_jsonl(work / "corpus" / f"part{k}.jsonl", docs)
    env = _env(tmp_path, HF_ENDPOINT=http_root.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")

    done = _bash(by_id(HUB_BLOCK, "bash").code, work, env, timeout=300)

    # tokenize: the corpus, GPT-2, every token in the val split (10M > the corpus, said on stderr).
    np.testing.assert_array_equal(_tokens(work / "data" / "shards"), expected_tokens(corpus[0] + corpus[1]))
    # download: exactly the val shard and 1:3, byte for byte, from the loopback Hub, into --dir.
    got = sorted(p.name for p in (work / "data" / "fineweb").glob("*.bin"))
    assert got == sorted(n for n in shards if not n.endswith("000004.bin"))
    assert all((work / "data" / "fineweb" / n).read_bytes() == shards[n] for n in got)
    # inspect: each of them, with the sha256 the Hub served.
    for name in got:
        assert f"data/fineweb/{name}" in done.stdout and hashlib.sha256(shards[name]).hexdigest() in done.stdout
    # tokenize hf://...: the two sample/10BT files alone, with the Hub's tokenizer: Llama-3-like uint32 shards.
    out = work / "data" / "fw-llama3"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["source"] == "meta-llama/Meta-Llama-3-8B"
    assert manifest["tokenizer"]["boundary_token"] == "<|begin_of_text|>" and manifest["n_vocab"] > 65536
    assert [s["path"] for s in manifest["sources"]] == [
        f"hf://datasets/HuggingFaceFW/fineweb-edu@{HUB_COMMIT}/sample/10BT/{k:03d}_00000.parquet" for k in range(2)]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    tok.encode_special_tokens = True
    want = []
    for doc in web[0] + web[1]:
        want += [tok.token_to_id("<|begin_of_text|>"), *tok.encode(doc, add_special_tokens=False).ids]
    np.testing.assert_array_equal(_tokens(out), np.array(want, dtype=np.int64))
    first = sorted(out.glob("*.bin"))[0]
    info = probe_shard(first)
    assert info.dtype == np.dtype("uint32") and int(np.fromfile(first, dtype="<i4", count=1)[0]) == MAGIC_LLAMA3
    # Everything came from the loopback Hub, through huggingface_hub's own requests, into HF_HOME.
    paths = [path for _, path, _ in http_root.log]
    assert "/api/datasets/HuggingFaceFW/fineweb-edu/revision/main" in paths
    assert any(p.startswith("/meta-llama/Meta-Llama-3-8B/resolve/") for p in paths)
    assert not [p for p in paths if "000004" in p or "100BT/" in p or "CC-MAIN" in p]
    assert (tmp_path / "hf-home" / "hub" / "models--meta-llama--Meta-Llama-3-8B").is_dir()


def test_a_gated_tokenizer_repo_says_how_to_get_in(http_root, tmp_path):  # noqa: F811
    """meta-llama's repos are gated: the README's command, for a user not let in yet, says what to do in one
    line, before it downloads the dataset."""
    pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install 'streamtok[hf]')")
    (line,) = [c for c in _commands(HUB_BLOCK) if "--tokenizer meta-llama/" in c]
    _fineweb_edu(http_root.root)
    hub_repo(http_root.root, "meta-llama/Meta-Llama-3-8B", {".gated": b"", "tokenizer.json": b"{}"}, kind="models")
    env = _env(tmp_path, HF_ENDPOINT=http_root.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    (message,) = done.stderr.strip().splitlines()
    assert message == (f"streamtok tokenize: error: --tokenizer meta-llama/Meta-Llama-3-8B: the Hub repo is gated; accept "
                       f"its terms on its page ({http_root.url}/meta-llama/Meta-Llama-3-8B) and log in (`hf auth login`, "
                       "or HF_TOKEN), or give a path"), message
    assert not (tmp_path / "data").exists()
    assert not [p for _, p, _ in http_root.log if p.endswith(".parquet")]  # said before the dataset is downloaded


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """``$SHARED`` with ``corpus/*.jsonl`` (six files: six work units), and the one-process output."""
    root = tmp_path_factory.mktemp("shared")
    for k in range(6):
        _write_jsonl(root / "corpus" / f"part{k:02d}.jsonl", make_docs(30, seed=80 + k))
    ref = root.parent / (root.name + "-one-process")
    inputs = sorted(str(p) for p in (root / "corpus").glob("*.jsonl"))
    done = subprocess.run([os.path.join(BIN, "streamtok"), "tokenize", *inputs, "--out", str(ref), "--no-progress"],
                          env=_env(root), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, output_bytes(ref)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A one-CPU Ray head on 127.0.0.1 that ``--address auto`` finds; the environment that finds it.

    Its own ``RAY_TMPDIR`` (short: Ray's socket paths must fit 107 bytes) holds the address file
    ``auto`` reads, so neither this head nor any other cluster on the machine is mixed up;
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray on the loopback instead of the host's
    address. Stopped by its own pid (``ray stop`` would stop every cluster of the machine).
    """
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**env, "RAY_TMPDIR": temp, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    log = open(os.path.join(temp, "head.log"), "w")  # noqa: SIM115 - closed in the finally
    head = subprocess.Popen(
        [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head", "--block",
         "--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats", "--port", str(_free_port()),
         "--dashboard-agent-listen-port", str(_free_port()), "--object-store-memory", str(100 << 20)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = Path(temp) / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 90
        while not address.exists() and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert address.exists(), "ray start --head did not come up:\n" + Path(temp, "head.log").read_text()[-3000:]
        assert address.read_text().startswith("127.0.0.1:"), address.read_text()
        yield env
    finally:
        head.send_signal(signal.SIGTERM)  # --block: the head drains and stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        for pid in _pids_naming(temp):  # anything of this head that outlived it, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _pids_naming(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in Path("/proc", entry, "cmdline").read_bytes():
                    found.append(int(entry))
    return found


@pytest.mark.slow
def test_the_ray_line_runs_as_written_on_a_local_ray_head(shared, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'streamtok[ray]')")
    root, one_process = shared
    (line,) = [c for c in _commands(HUB_BLOCK, 2) if "--engine ray" in c]
    assert "--address auto" in line
    out = root / "shards"
    shutil.rmtree(out, ignore_errors=True)
    with ray_head(_env(tmp_path, SHARED=str(root))) as env:
        done = _bash(line, tmp_path, env, timeout=180)
    assert "Connecting to existing Ray cluster at address: 127.0.0.1:" in done.stderr, done.stderr[-2000:]
    assert output_bytes(out) == one_process


def _array_indices(script: str) -> list[int]:
    (spec,) = re.findall(r"^#SBATCH --array=(\d+)-(\d+)$", script, re.M)
    return list(range(int(spec[0]), int(spec[1]) + 1))


@pytest.mark.slow
def test_the_slurm_array_script_runs_as_slurm_runs_it(shared, tmp_path):
    root, one_process = shared
    script = SCRIPT.read_text()
    assert by_id(HUB_BLOCK + " #3", "bash").code == script, "README.md must show examples/tokenize_array.sbatch as it is"
    submit, finalize = [c for c in _commands(HUB_BLOCK, 2) if "--engine ray" not in c]
    assert submit.split("#")[0].split() == ["sbatch", "--wait", "examples/tokenize_array.sbatch"]  # not run: no Slurm
    indices = _array_indices(script)
    assert len(indices) > 1
    out = root / "shards"
    shutil.rmtree(out, ignore_errors=True)
    env = _env(tmp_path, SHARED=str(root), SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_COUNT=str(len(indices)),
               SLURM_ARRAY_TASK_MIN=str(indices[0]), SLURM_ARRAY_TASK_MAX=str(indices[-1]))
    # All array tasks at once, as Slurm starts them, each in its own process and environment.
    tasks = [subprocess.Popen(["bash", str(SCRIPT)], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**env, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_JOB_ID": str(5000 + i)})
             for i in indices]
    for i, task in zip(indices, tasks):
        stdout, stderr = task.communicate(timeout=240)
        assert task.returncode == 0, f"array task {i}:\n{stderr[-3000:]}"
        assert f"task {i} of {len(indices)}" in stdout, stdout
    assert not (out / "manifest.json").exists()  # nothing assembled before --finalize
    _bash(finalize, tmp_path, env)
    assert output_bytes(out) == one_process
