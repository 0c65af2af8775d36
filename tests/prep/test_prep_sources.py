"""Input reading: documents do not depend on block size or resume point; bounded chunks; formats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtok.errors import ConfigError, InputFormatError
from streamtok.prep.sources import ReadOptions, documents, input_format, iter_chunks, split_point


def docs_of(path, opts, start=0, line=1):
    fmt = input_format(str(path), opts.fmt)
    return [d for c in iter_chunks(str(path), 0, opts, start=start, line=line) for d in documents(c, str(path), fmt, opts)]


def reference(text, sep):
    return [d for d in text.split(sep) if d and not d.isspace()]


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="ab \n\u00e9\U0001f642", max_size=300),
    sep=st.sampled_from(["\n\n", "\n", "ab", "\n\n\n", "aba"]),
    block=st.integers(1, 40),
)
def test_documents_do_not_depend_on_block_size(tmp_path_factory, text, sep, block):
    path = tmp_path_factory.mktemp("s") / "t.txt"
    path.write_bytes(text.encode())
    opts = ReadOptions(separator=sep, block_bytes=block)
    assert docs_of(path, opts) == reference(text, sep)


@pytest.mark.parametrize(
    "buf, sep, cut",
    [(b"a\n\n\n", b"\n\n", 3), (b"a\n\n\n\nb", b"\n\n", 5), (b"x\n\n", b"\n\n", 3), (b"abc", b"\n\n", 0),
     (b"ababa", b"aba", 3), (b"q\nr", b"\n", 2), (b"1ab2ab", b"ab", 6)],
)
def test_split_point(buf, sep, cut):
    assert split_point(buf, sep) == cut == len(buf) - len(buf.split(sep)[-1])


def test_resume_from_any_chunk_boundary(tmp_path):
    text = "one\n\n\ntwo two\n\nthree\n\n\n\nfour\n\nfive"
    path = tmp_path / "t.txt"
    path.write_text(text)
    opts = ReadOptions(block_bytes=3)
    chunks = list(iter_chunks(str(path), 0, opts))
    assert len(chunks) >= 4
    for c in chunks:  # what follows a boundary is what a whole-file read gives after it
        rest = docs_of(path, opts, start=c.start, line=c.line)
        before = [d for k in chunks if k.end <= c.start for d in documents(k, str(path), "txt", opts)]
        assert before + rest == reference(text, "\n\n")


def test_chunks_stay_small_on_a_big_input(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text(("x" * 100 + "\n\n") * 20000)  # 2 MB
    opts = ReadOptions(block_bytes=4096)
    sizes = [len(c.payload) for c in iter_chunks(str(path), 0, opts)]
    assert sum(sizes) == path.stat().st_size and max(sizes) <= 4096 + 102


def test_jsonl_lines_and_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "a\n\nb"}) + "\n\n" + json.dumps({"text": ""}) + "\n" + json.dumps({"text": "c"}))
    assert docs_of(path, ReadOptions(block_bytes=5)) == ["a\n\nb", "c"]
    path.write_text('{"text": "x"}\n[1, 2]\n')
    with pytest.raises(InputFormatError, match=r"a.jsonl:2: no string field 'text' \(found: list\)"):
        docs_of(path, ReadOptions())
    path.write_text('{"text": "x"}\n\n{"text": \n')
    with pytest.raises(InputFormatError, match=r"a.jsonl:3: not a JSON line"):
        docs_of(path, ReadOptions(block_bytes=4))


def test_utf8_errors_option(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes(b"ok\n\nbad \xff\xfe")
    with pytest.raises(InputFormatError, match=r"b.txt: invalid UTF-8 at byte 8"):
        docs_of(path, ReadOptions())
    assert docs_of(path, ReadOptions(utf8_errors="replace")) == ["ok", "bad \ufffd\ufffd"]


def test_formats_and_options_validated():
    assert [input_format(p) for p in ("a.txt", "b.JSONL", "c.parquet", "-", "d")] == ["txt", "jsonl", "parquet", "txt", "txt"]
    assert input_format("a.txt", "jsonl") == "jsonl"
    with pytest.raises(ConfigError, match="separator"):
        ReadOptions(separator="")
    with pytest.raises(ConfigError, match="input format"):
        ReadOptions(fmt="csv")


def test_parquet_rows_and_resume(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [f"doc {i}" if i % 7 else None for i in range(10000)]
    pq.write_table(pa.table({"text": texts, "n": list(range(10000))}), tmp_path / "p.parquet", row_group_size=3000)
    want = [t for t in texts if t]
    assert docs_of(tmp_path / "p.parquet", ReadOptions()) == want
    assert docs_of(tmp_path / "p.parquet", ReadOptions(), start=6500) == [t for t in texts[6500:] if t]
    with pytest.raises(InputFormatError, match="no column 'body'"):
        docs_of(tmp_path / "p.parquet", ReadOptions(field="body"))


@pytest.mark.parametrize("sep", ["\n\n", "\n", "aba"])
def test_one_long_line_is_read_in_linear_time_and_memory(tmp_path, monkeypatch, sep):
    # 4 MB without a separator, read in 4 KiB blocks: the old reader searched the whole
    # buffer after every block (1000 searches, 2 GB scanned) and rebuilt it each time.
    import tracemalloc

    from streamtok.prep import sources

    n = 4 << 20
    path = tmp_path / "long.txt"
    path.write_bytes(b"x" * n + sep.encode() + b"tail")
    calls = []
    real = sources.split_point
    monkeypatch.setattr(sources, "split_point", lambda buf, s: calls.append(len(buf)) or real(buf, s))
    opts = ReadOptions(separator=sep, block_bytes=4096)
    tracemalloc.start()
    chunks = [(c.start, c.end, len(c.payload)) for c in iter_chunks(str(path), 0, opts)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert chunks == [(0, n + len(sep), n + len(sep)), (n + len(sep), n + len(sep) + 4, 4)]
    assert len(calls) == 1  # searched once the separator came, not after every block
    assert peak < 2.5 * n  # the blocks, their join, and the chunk cut from it
