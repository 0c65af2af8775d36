"""streamtok tokenize: round trip, splits, formats, parallel = serial, resume after SIGKILL."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from prep_helpers import cli_command, dir_bytes, expected_tokens, make_docs, output_bytes, run_cli, write_txt

import streamtok
from streamtok import MemmapReader, ShardLister
from streamtok._formats import MAGIC_GPT2, probe_shard
from streamtok.documents import sidecar as documents_module
from streamtok.errors import ConfigError, InputFormatError, StateMismatchError
from streamtok.prep.shardsink import ShardPlan, ShardSink
from streamtok.prep.sources import ReadOptions
from streamtok.prep.tokenize import KILL_ENV, TokenizeConfig, parse_count, tokenize_files


def _concat(directory, split):
    reader = MemmapReader(ShardLister(directory).split(split))
    return np.concatenate([np.asarray(reader.shard_array(k), dtype=np.int64) for k in range(len(reader.infos))])


@pytest.fixture
def corpus(tmp_path):
    docs = make_docs(400, seed=1)
    return write_txt(tmp_path / "corpus.txt", docs), docs


def tok(inputs, out, workers=1, overwrite=False, **kw):
    cfg = TokenizeConfig(**{"shard_tokens": 1500, **kw})
    return tokenize_files([str(p) for p in inputs], str(out), config=cfg, workers=workers, progress=False, overwrite=overwrite)


def test_round_trip_matches_tiktoken(corpus, tmp_path):
    path, docs = corpus
    manifest = tok([path], tmp_path / "out")
    want = expected_tokens(docs)
    got = _concat(tmp_path / "out", "all")
    np.testing.assert_array_equal(got, want)
    assert manifest["complete"] and manifest["n_tokens"] == len(want) and manifest["n_docs"] == len(docs)
    assert manifest["n_chars"] == sum(len(d) for d in docs)
    assert [s["n_tokens"] for s in manifest["shards"]][:-1] == [1500] * (len(manifest["shards"]) - 1)
    for shard in manifest["shards"]:
        data = (tmp_path / "out" / shard["name"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    info = probe_shard(tmp_path / "out" / "data_train_000000.bin")
    assert (info.kind, info.dtype, info.n_tokens) == ("llmc", np.dtype("uint16"), 1500)
    assert np.fromfile(tmp_path / "out" / "data_train_000000.bin", dtype="<i4", count=1)[0] == MAGIC_GPT2


def test_loader_reads_tokenized_windows(corpus, tmp_path):
    path, docs = corpus
    tok([path], tmp_path / "out")
    want = expected_tokens(docs)
    dl = streamtok.loader(str(tmp_path / "out"), seq_len=32, batch_size=4, split="all", mode="sequential")
    x, y = next(iter(dl))
    np.testing.assert_array_equal(x.numpy().ravel(), want[: 4 * 32])
    np.testing.assert_array_equal(y[0].numpy(), want[1:33])


def test_loader_and_inspect_take_the_document_index_tokenize_wrote(corpus, tmp_path, monkeypatch, capsys):
    path, docs = corpus
    manifest = tok([path], tmp_path / "out")
    copied = tmp_path / "copied"  # new mtimes: the index is keyed by the shards' content
    shutil.copytree(tmp_path / "out", copied, copy_function=shutil.copyfile)
    before = output_bytes(copied)
    monkeypatch.setattr(documents_module, "scan_document_starts", lambda *a, **k: pytest.fail("index rebuilt"))
    dl = streamtok.loader(str(copied), seq_len=32, batch_size=4, split="all", mode="sequential", documents="mask", metrics=False)
    x, _, doc = next(iter(dl))
    want = expected_tokens(docs)
    np.testing.assert_array_equal(x.numpy().ravel(), want[: 4 * 32])
    eot, starts = manifest["eot_token"], doc.position_ids.numpy() == 0
    assert starts[:, 0].all() and np.array_equal(starts[:, 1:], x.numpy()[:, 1:] == eot)
    capsys.readouterr()
    assert run_cli(["inspect", str(copied), "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(reports) > 1 and manifest["n_docs"] == len(docs)
    assert all(r["documents"]["n_documents"] == r["n_docs"] + (r["head_tokens"][0] != eot) for r in reports)
    assert dir_bytes(copied) == before  # nothing was rewritten


def test_val_split_is_whole_first_documents(corpus, tmp_path):
    path, docs = corpus
    manifest = tok([path], tmp_path / "out", val_tokens=2000, shard_tokens=1000)
    want = expected_tokens(docs)
    val, train = _concat(tmp_path / "out", "val"), _concat(tmp_path / "out", "train")
    np.testing.assert_array_equal(np.concatenate([val, train]), want)
    assert len(val) >= 2000 and train[0] == 50256  # val ends where a document starts
    assert not np.any(val[2000:] == 50256)  # ... the first such place at or after 2000 tokens
    names = sorted(os.listdir(tmp_path / "out"))
    assert "data_val_000000.bin" in names and "data_val_000001.bin" in names and "data_train_000000.bin" in names
    assert manifest["splits"]["val"]["n_tokens"] == len(val)
    assert manifest["splits"]["val"]["n_docs"] + manifest["splits"]["train"]["n_docs"] == len(docs)


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_output_is_byte_identical(tmp_path, workers):
    inputs = [write_txt(tmp_path / f"in{k}.txt", make_docs(300, seed=k)) for k in range(3)]
    opts = dict(read=ReadOptions(block_bytes=2000), val_tokens=700)
    tok(inputs, tmp_path / "one", workers=1, **opts)
    tok(inputs, tmp_path / "many", workers=workers, **opts)
    one, many = output_bytes(tmp_path / "one"), output_bytes(tmp_path / "many")
    assert len(one) > 5 and one == many


def test_npy_jsonl_and_doc_per_line(tmp_path):
    docs = make_docs(50, seed=3)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "body": d}) + "\n\n" for i, d in enumerate(docs)))
    lines = [d.replace("\n", " ") for d in docs]
    (tmp_path / "b.txt").write_text("\n".join(lines) + "\n")
    m = tok([tmp_path / "a.jsonl"], tmp_path / "j", shard_format="npy", read=ReadOptions(field="body"), prefix="fw")
    assert all(s["name"].endswith(".npy") for s in m["shards"]) and m["shards"][0]["name"] == "fw_train_000000.npy"
    np.testing.assert_array_equal(_concat(tmp_path / "j", "all"), expected_tokens(docs))
    tok([tmp_path / "b.txt"], tmp_path / "l", read=ReadOptions(separator="\n"))
    np.testing.assert_array_equal(_concat(tmp_path / "l", "all"), expected_tokens(lines))


def test_stdin_input(tmp_path, monkeypatch):
    docs = make_docs(30, seed=4)
    data = ("\n\n".join(docs)).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    m = tok(["-"], tmp_path / "out")
    np.testing.assert_array_equal(_concat(tmp_path / "out", "all"), expected_tokens(docs))
    assert m["sources"][0]["path"] == "-"


def test_cli_summary_line_and_errors(corpus, tmp_path, capsys):
    path, docs = corpus
    assert run_cli(["tokenize", str(path), "--out", str(tmp_path / "o"), "--shard-tokens", "2K", "--no-progress", "--workers", "1"]) == 0
    n = len(expected_tokens(docs))
    chars = sum(len(d) for d in docs)
    out = capsys.readouterr().out
    assert f"{n:,} tokens from {chars:,} chars, {chars / n:.2f} chars/token" in out
    assert run_cli(["tokenize", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o2")]) == 2
    assert "missing.txt: no such input file" in capsys.readouterr().err
    assert run_cli(["tokenize", str(path), "--out", str(tmp_path / "o3"), "--encoding", "nope"]) == 2
    assert "unknown tiktoken encoding 'nope'" in capsys.readouterr().err


def test_bad_input_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 5}\n')
    for workers in (1, 2):  # raised in a pool worker, re-raised here
        with pytest.raises(InputFormatError, match=r"bad.jsonl:2: no string field 'text'"):
            tok([tmp_path / "bad.jsonl"], tmp_path / f"o{workers}", workers=workers)
    (tmp_path / "bad.txt").write_bytes(b"fine\n\nbroken \xff here")
    with pytest.raises(InputFormatError, match=r"bad.txt: invalid UTF-8 at byte 13"):
        tok([tmp_path / "bad.txt"], tmp_path / "txt")


def test_rerun_is_noop_and_other_settings_refused(corpus, tmp_path):
    path, _ = corpus
    tok([path], tmp_path / "out")
    before = output_bytes(tmp_path / "out")
    assert tok([path], tmp_path / "out")["complete"]
    assert output_bytes(tmp_path / "out") == before
    with pytest.raises(StateMismatchError, match=r"shard_tokens = 1500, but this run has 999"):
        tok([path], tmp_path / "out", shard_tokens=999)
    path.write_text(path.read_text() + "one more document\n")
    with pytest.raises(StateMismatchError, match=r"input #0 \(.*corpus.txt\)"):
        tok([path], tmp_path / "out")
    (tmp_path / "out" / "manifest.json").write_text("{not json")
    with pytest.raises(StateMismatchError, match="not a readable tokenize manifest"):
        tok([path], tmp_path / "out")


def test_settings_validated():
    with pytest.raises(ConfigError, match="shard_tokens"):
        TokenizeConfig(shard_tokens=0)
    with pytest.raises(ConfigError, match="shard format"):
        TokenizeConfig(shard_format="parquet")
    assert [parse_count(s) for s in ("100M", "1.5K", "10_000", "2B", "7")] == [10**8, 1500, 10000, 2 * 10**9, 7]


def test_sink_uint32_and_exact_shards(tmp_path):
    plan = ShardPlan(str(tmp_path), "x", "bin", 4, 0, "uint32", 0)
    sink = ShardSink(plan)
    consumed = list(sink.feed(np.array([0, 70000, 1, 2, 3, 0, 5], dtype=np.uint32)))
    sink.finish()
    assert consumed == [4]
    assert [s["n_tokens"] for s in sink.written] == [4, 3]
    info = probe_shard(tmp_path / "x_train_000000.bin")
    assert info.dtype == np.dtype("uint32") and info.version == 7


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["recorded", "renamed"])
def test_resume_after_sigkill_gives_identical_files(tmp_path, stage):
    inputs = [write_txt(tmp_path / f"in{k}.txt", make_docs(250, seed=10 + k)) for k in range(2)]
    args = [*map(str, inputs), "--shard-tokens", "1000", "--val-tokens", "1200", "--no-progress", "--workers", "2"]
    tok(inputs, tmp_path / "clean", workers=2, shard_tokens=1000, val_tokens=1200)
    env = {**os.environ, KILL_ENV: f"3:{stage}"}
    killed = subprocess.run(cli_command("tokenize", *args, "--out", str(tmp_path / "resumed")), env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    partial = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert not partial["complete"]
    assert len(partial["shards"]) == (4 if stage == "recorded" else 3)
    assert (tmp_path / "resumed" / "data_train_000001.bin").exists()  # shard 3 = val 0, 1, train 0, 1
    inodes = {p.name: p.stat().st_ino for p in (tmp_path / "resumed").glob("data_*")}
    again = subprocess.run(cli_command("tokenize", *args, "--out", str(tmp_path / "resumed")), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    clean_files, resumed_files = output_bytes(tmp_path / "clean"), output_bytes(tmp_path / "resumed")
    assert len(clean_files) > 8 and clean_files == resumed_files
    # the shards recorded before the kill were kept, not rewritten: the run resumed after them
    kept = {p.name for p in (tmp_path / "resumed").glob("data_*") if inodes.get(p.name) == p.stat().st_ino}
    assert kept == {n for s in partial["shards"] for n in (s["name"], s["docidx"])}


def test_parquet_in_two_processes(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    docs = make_docs(200, seed=6)
    pq.write_table(pa.table({"content": docs}), tmp_path / "d.parquet", row_group_size=64)
    tok([tmp_path / "d.parquet"], tmp_path / "out", workers=2, read=ReadOptions(field="content"))
    np.testing.assert_array_equal(_concat(tmp_path / "out", "all"), expected_tokens(docs))


def test_cli_separator_escapes_and_doc_per_line(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo|||three\n")
    assert run_cli(["tokenize", str(tmp_path / "a.txt"), "--out", str(tmp_path / "s"), "--separator", "|||", "--no-progress"]) == 0
    np.testing.assert_array_equal(_concat(tmp_path / "s", "all"), expected_tokens(["one\ntwo", "three\n"]))
    assert run_cli(["tokenize", str(tmp_path / "a.txt"), "--out", str(tmp_path / "l"), "--doc-per-line", "--no-progress"]) == 0
    np.testing.assert_array_equal(_concat(tmp_path / "l", "all"), expected_tokens(["one", "two|||three"]))
    (tmp_path / "b.txt").write_text("x\n\ny\n\n")
    assert run_cli(["tokenize", str(tmp_path / "b.txt"), "--out", str(tmp_path / "e"), "--separator", "\\n\\n", "--no-progress"]) == 0
    np.testing.assert_array_equal(_concat(tmp_path / "e", "all"), expected_tokens(["x", "y"]))


def test_second_concurrent_run_fails_at_once(tmp_path):
    # The first run reads stdin from a pipe held open, so it holds the lock until we close it.
    out = tmp_path / "out"
    first = subprocess.Popen(
        cli_command("tokenize", "-", "--out", str(out), "--no-progress", "--workers", "1"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        first.stdin.write(b"a first document\n\n")
        first.stdin.flush()
        for _ in range(600):  # its first manifest is written under the lock
            if (out / "manifest.json").exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        second = subprocess.run(
            cli_command("tokenize", "-", "--out", str(out), "--no-progress"), input=b"x", capture_output=True, timeout=60
        )
        assert second.returncode == 2
        err = second.stderr.decode()
        assert err.count("\n") == 1 and "another streamtok tokenize is writing to this directory" in err
    finally:
        _, err = first.communicate(b"second document\n\n", timeout=60)
    assert first.returncode == 0, err
    np.testing.assert_array_equal(_concat(out, "all"), expected_tokens(["a first document", "second document"]))


def test_foreign_files_in_out_refused_unless_overwrite(corpus, tmp_path):
    path, docs = corpus
    out = tmp_path / "out"
    out.mkdir()
    (out / "other_dataset_000.bin").write_bytes(b"\0" * 64)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files this run would not write \(notes.txt, other_dataset_000.bin\).*--overwrite"):
        tok([path], out)
    assert sorted(os.listdir(out)) == [".streamtok-tokenize.lock", "notes.txt", "other_dataset_000.bin"]
    tok([path], out, overwrite=True)
    assert not (out / "other_dataset_000.bin").exists() and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    np.testing.assert_array_equal(_concat(out, "all"), expected_tokens(docs))
    with pytest.raises(StateMismatchError, match="--overwrite"):  # another run's settings
        tok([path], out, shard_tokens=700)
    tok([path], out, shard_tokens=700, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["shard_tokens"] == 700
    assert all(s["n_tokens"] <= 700 for s in json.loads((out / "manifest.json").read_text())["shards"])
    tok([path], out, shard_tokens=10**6, overwrite=True)  # fewer shards: the old indexes went with the old shards
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 1
    output_bytes(out)


def _stop_after_first_shard(monkeypatch):
    # Stand-in for kill -9 right after shard 0 was recorded (the SIGKILL tests do it for real).
    from streamtok.prep import tokenize as tokenize_mod

    class Killed(Exception):
        pass

    def kill(pid, sig):
        raise Killed

    monkeypatch.setenv(KILL_ENV, "0")
    monkeypatch.setattr(tokenize_mod.os, "kill", kill)
    return Killed


def test_resume_with_other_stdin_is_refused(tmp_path, monkeypatch):
    a = ("\n\n".join(make_docs(120, seed=21)) + "\n\n").encode()
    b = a.replace(b"fox", b"cat")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(a)))
    tok(["-"], tmp_path / "clean", shard_tokens=400, read=ReadOptions(block_bytes=512))
    killed = _stop_after_first_shard(monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(a)))
    with pytest.raises(killed):
        tok(["-"], tmp_path / "out", shard_tokens=400, read=ReadOptions(block_bytes=512))
    monkeypatch.delenv(KILL_ENV)
    resume = json.loads((tmp_path / "out" / "manifest.json").read_text())["resume"]
    assert resume["source"] == 0 and resume["start"] > 0
    assert resume["stdin_sha256"] == hashlib.sha256(a[: resume["start"]]).hexdigest()
    for other in (b, a[: resume["start"] - 1]):  # other bytes, or too few of them
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(other)))
        with pytest.raises(StateMismatchError, match=r"stdin: its first [\d,]+ bytes are not the ones the interrupted run read"):
            tok(["-"], tmp_path / "out", shard_tokens=400, read=ReadOptions(block_bytes=512))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(a)))
    tok(["-"], tmp_path / "out", shard_tokens=400, read=ReadOptions(block_bytes=512))
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "clean")


@pytest.mark.parametrize("data", [b"", b"\n\n  \n\t\n"])
def test_empty_input_exits_nonzero_with_a_message(tmp_path, monkeypatch, capsys, data):
    (tmp_path / "empty.txt").write_bytes(data)
    with pytest.raises(InputFormatError, match="no documents in .*empty.txt"):
        tok([tmp_path / "empty.txt"], tmp_path / "o1")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run_cli(["tokenize", "-", "--out", str(tmp_path / "o2"), "--no-progress", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no documents in stdin" in err
    assert not list((tmp_path / "o2").glob("*.bin"))


@pytest.mark.parametrize(
    "args, says",
    [
        (["--out", "{tmp}/afile"], "exists and is not a directory"),
        (["--out", "{tmp}/afile/sub"], "cannot create the directory"),
        (["--out", "{tmp}/o", "--prefix", "../up"], "prefix must be a plain file name part"),
        (["--out", "{tmp}/o", "--prefix", ".hidden"], "prefix must be a plain file name part"),
        (["--out", "{tmp}/o", "--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_cli_bad_out_and_prefix_are_one_line(corpus, tmp_path, capsys, args, says):
    path, _ = corpus
    (tmp_path / "afile").write_text("")
    argv = ["tokenize", str(path), *[a.format(tmp=tmp_path) for a in args], "--no-progress"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_resume_skips_across_chunks_cut_differently(tmp_path, monkeypatch):
    # The resumed run reads its blocks from the checkpoint's offset, so its chunks end elsewhere
    # than the interrupted run's; the tokens to skip may span several of them.
    path = write_txt(tmp_path / "in.txt", make_docs(120, seed=22))
    opts = dict(shard_tokens=400, read=ReadOptions(block_bytes=300))
    tok([path], tmp_path / "clean", **opts)
    killed = _stop_after_first_shard(monkeypatch)
    with pytest.raises(killed):
        tok([path], tmp_path / "out", **opts)
    monkeypatch.delenv(KILL_ENV)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["resume"]["skip"] > 0
    tok([path], tmp_path / "out", **opts)
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "clean")


def test_one_huge_document_is_encoded_in_bounded_memory(tmp_path):
    # A 4 MB line: as a list of Python ints its ~1M ids take ~36 MB; as tiktoken's uint32
    # array 4 MB. The whole run must stay within a few times the line's size.
    import tracemalloc

    words = [w for w in " ".join(make_docs(2000, seed=60, max_words=200)).split() if w.isascii()]
    line = " ".join(words)
    line = (line * (4_000_000 // len(line) + 1))[:4_000_000]
    (tmp_path / "long.txt").write_text(line + "\n")
    tracemalloc.start()
    tok([tmp_path / "long.txt"], tmp_path / "out", shard_tokens=100_000, read=ReadOptions(separator="\n"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(_concat(tmp_path / "out", "all"), expected_tokens([line]))
    assert peak < 8 * len(line), peak


def test_small_and_huge_documents_mix_in_order(tmp_path, monkeypatch):
    from streamtok.prep import _encode

    monkeypatch.setattr(_encode, "BIG_DOC_CHARS", 40)  # every other document takes the array path
    docs = make_docs(200, seed=61)
    path = write_txt(tmp_path / "in.txt", docs)
    tok([path], tmp_path / "out", workers=1)
    np.testing.assert_array_equal(_concat(tmp_path / "out", "all"), expected_tokens(docs))
    assert any(len(d) >= 40 for d in docs) and any(len(d) < 40 for d in docs)
