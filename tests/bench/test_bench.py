"""``streamtok bench``: a tiny end-to-end run, and its pure helpers."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from streamtok.bench import cli as bench
from streamtok.bench.contestants import Shape, make, parse
from streamtok.bench.run import page_floor

CONTESTANTS = [
    "nanogpt", "floor", "mapstyle:workers=0",
    "streamtok:mode=shuffle,workers=0", "streamtok:mode=random,workers=2,out=prefetch",
]


def _parse(argv):
    parser = argparse.ArgumentParser(prog="streamtok")
    bench.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.slow
def test_bench_json_smoke(tmp_path, capsys):
    args = _parse(
        ["bench", "--json", "--quick", "--warmup-s", "0", "--tokens", "400000", "--batch-size", "4", "--seq-len", "64",
         "--batches", "5", "--repeats", "2", "--step-ms", "0", "--tmp-dir", str(tmp_path)]
        + [a for c in CONTESTANTS for a in ("--contestant", c)]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in report["results"]] == CONTESTANTS
    for r in report["results"]:
        assert "error" not in r, r
        assert r["tokens_per_s"] > 0 and len(r["tokens_per_s_all"]) == 2
        assert r["x_baseline"] > 0 and r["trainer_us"] > 0 and 0 <= r["wait_fraction"] <= 1
        assert r["peak_rss"]["anon"] > 0 and r["cold"]["read_amp"] >= 0 and r["cold"]["page_floor"] >= 1
    assert report["results"][0]["x_baseline"] == 1.0
    assert report["machine"]["cores"] >= 1
    assert list(tmp_path.iterdir()) == []  # the synthetic data was cleaned up
    assert "| nanogpt |" in bench.table(report["results"])


def test_contestants_deliver_the_same_shape(tmp_path):
    bench.make_data(tmp_path, 50_000, shards=2)
    shape = Shape(batch_size=3, seq_len=16)
    for name in CONTESTANTS[:4] + ["streamtok:mode=sequential,workers=0,out=compact"]:
        batch = next(make(name, tmp_path, shape)())
        if isinstance(batch, torch.Tensor):  # compact: (B, T+1) in the stored dtype
            assert batch.shape == (3, 17) and batch.dtype == torch.uint16
            continue
        x, y = batch
        assert x.shape == y.shape == (3, 16), name
        assert torch.equal(torch.as_tensor(x)[:, 1:], torch.as_tensor(y)[:, :-1]), name


def test_parse_and_label():
    assert parse("streamtok:mode=random,workers=2") == ("streamtok", {"mode": "random", "workers": "2"})
    assert parse("nanogpt") == ("nanogpt", {})
    assert bench.label("streamtok:workers=2,out=compact") == "streamtok shuffle w=2 out=compact"
    with pytest.raises(ValueError, match="unknown contestant"):
        make("litdata", ".", Shape(1, 1))


def test_page_floor():
    # A 2050-byte window (1025 uint16 tokens) spans 1 page or 2: on average ~1.5 x 4 KiB.
    floor = page_floor(2050, 2)
    assert 2.9 < floor < 3.1
    assert page_floor(4096, 4096) == 1.0 and page_floor(10, 2, sequential=True) == 1.0
    aligns = np.arange(0, 4096, 2)
    assert floor == pytest.approx(np.mean(-(-(aligns + 2050) // 4096) * 4096) / 2050)


def test_table_shows_errors():
    text = bench.table([{"name": "nanogpt", "error": "exit 1: boom"}])
    assert "error: exit 1: boom" in text


@pytest.mark.parametrize("flag,value", [("--warmup-s", "nan"), ("--step-ms", "nan"), ("--step-ms", "inf"), ("--warmup-s", "-1")])
def test_durations_must_be_finite_and_not_negative(flag, value, capsys):
    """--warmup-s nan went into the --json report as NaN (invalid JSON); --step-ms nan crashed each contestant."""
    with pytest.raises(SystemExit) as exit_:
        _parse(["bench", "--json", flag, value])
    assert exit_.value.code == 2
    assert "not a finite number >= 0" in capsys.readouterr().err


def _strict(text):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_with_null_for_unknown(tmp_path, monkeypatch, capsys):
    results = [{"name": "nanogpt", "tokens_per_s": float("nan"), "cold": {"read_amp": float("inf")}, "all": [1.0, float("-inf")]}]
    monkeypatch.setattr(bench, "run_all", lambda *a, **k: results)
    args = _parse(["bench", "--json", "--data", str(tmp_path), "--contestant", "nanogpt"])
    bench.handler(args)
    report = _strict(capsys.readouterr().out)
    assert report["results"] == [{"name": "nanogpt", "tokens_per_s": None, "cold": {"read_amp": None}, "all": [1.0, None]}]


def test_help_is_plain_text(capsys):
    """``streamtok bench --help`` shows no reStructuredText markup (roles, double backquotes)."""
    from streamtok.cli import build_parser, plain

    assert plain("see :mod:`streamtok.bench.run`, :func:`~a.b.c` and ``--data DIR``") == (
        "see streamtok.bench.run, c and --data DIR"
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    out = capsys.readouterr().out
    assert "streamtok.bench.contestants" in out and ":mod:" not in out and "`" not in out
