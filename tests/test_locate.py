"""``loader.locate(step)`` and ``streamtok locate``: every row of any step named, checked against real batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _util import BOS, make_doc_shards, make_shards

import streamtok
from streamtok import cli
from streamtok.errors import ConfigError

T, B = 16, 3


def _rows(batch) -> np.ndarray:
    """The (B, T+1) tokens of a batch: x with y's last column."""
    x, y = batch[0], batch[1]
    return torch.cat([x, y[:, -1:]], dim=1).numpy()


def check_located(loader, batches: list, steps: list[int], doc_starts: np.ndarray | None = None) -> None:
    """Each located row's shard and offset hold the batch row's first tokens; documents agree."""
    reader = loader.collator.reader
    paths = list(reader.paths)
    packed = loader.collator.source.__class__.__name__ == "PackSampler"
    for step in steps:
        records = loader.locate(step)
        rows = _rows(batches[step])
        assert len(records) == len(rows) == B
        for row, rec in zip(rows, records):
            g = int(reader.offsets[paths.index(rec.shard)]) + rec.offset
            assert rec["shard"] == rec.shard and rec["offset"] == rec.offset  # also a mapping
            n = T + 1
            if doc_starts is None:
                assert rec.document is None
            else:
                assert rec.document == int(np.searchsorted(doc_starts, g, side="right")) - 1
                if packed:  # a packed row begins with a whole document (cropped to the row)
                    assert doc_starts[rec.document] == g
                    ends = np.append(doc_starts[1:], reader.n_tokens)
                    n = min(n, int(ends[rec.document]) - g)
            assert np.array_equal(reader.read(g, g + n), row[:n]), f"step {step}: row is not at {rec}"


def _sample(n: int, k: int = 6, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted({0, n - 1, *rng.integers(0, n, k).tolist()})


@pytest.mark.parametrize("mode", ["shuffle", "random", "sequential"])
@pytest.mark.parametrize("world", [(0, 1), (1, 2)], ids=["rank0of1", "rank1of2"])
def test_locate_matches_the_batches_of_windows(tmp_path, mode, world):
    make_shards(tmp_path / "d", [900, 700, 500])
    rank, size = world
    loader = streamtok.loader(tmp_path / "d", seq_len=T, batch_size=B, split="all", mode=mode, seed=3, epochs=2,
                              rank=rank, world_size=size, metrics=False)
    fresh = [r.offset for r in loader.locate(5)]
    batches = list(loader)
    check_located(loader, batches, _sample(len(batches)))
    assert [r.offset for r in loader.locate(5)] == fresh  # iterated or not, the same answer
    with pytest.raises(ConfigError, match="past the end"):
        loader.locate(len(batches))
    with pytest.raises(ConfigError):
        loader.locate(-1)


@pytest.mark.parametrize("documents", ["mask", "bos", "pack"])
@pytest.mark.parametrize("world", [(0, 1), (1, 2)], ids=["rank0of1", "rank1of2"])
def test_locate_matches_the_batches_of_documents(tmp_path, documents, world):
    _, starts = make_doc_shards(tmp_path, docs=80)
    rank, size = world
    loader = streamtok.loader(tmp_path, seq_len=T, batch_size=B, split="all", documents=documents, bos_id=BOS,
                              seed=1, epochs=2, rank=rank, world_size=size, metrics=False,
                              **({"block_docs": 50} if documents == "pack" else {}))
    batches = list(loader)
    check_located(loader, batches, _sample(len(batches)), doc_starts=starts)
    with pytest.raises(ConfigError, match="past the end"):
        loader.locate(len(batches))


def test_locate_after_a_resume_and_on_an_endless_loader(tmp_path):
    make_shards(tmp_path / "d", [3000])
    kw = dict(seq_len=T, batch_size=B, split="all", seed=5, epochs=None, metrics=False)
    first = streamtok.loader(tmp_path / "d", **kw)
    it = iter(first)
    batches = [next(it) for _ in range(150)]  # past two epochs of 62 steps
    state = first.state_dict()
    it.close()
    resumed = streamtok.loader(tmp_path / "d", **kw)
    resumed.load_state_dict(state)
    check_located(resumed, batches, [0, 61, 62, 100, 149])


@pytest.mark.parametrize("weights", [{"a": 0.7, "b": 0.3}, [(0, {"a": 1.0, "b": 0.0}), (20, {"a": 0.2, "b": 0.8})]], ids=["fixed", "schedule"])
def test_locate_names_the_mixture_source(tmp_path, weights):
    make_shards(tmp_path / "a", [2000, 900])
    make_shards(tmp_path / "b", [1500], start=100_000)
    loader = streamtok.loader({"a": tmp_path / "a", "b": tmp_path / "b"}, weights=weights, seq_len=T, batch_size=B,
                              split="all", seed=2, rank=1, world_size=2, metrics=False)
    it = iter(loader)
    batches = [next(it) for _ in range(60)]
    check_located(loader, batches, _sample(60))
    for step in (3, 45):
        for rec, row in zip(loader.locate(step), _rows(batches[step])):
            assert rec.source == ("b" if row[0] >= 100_000 else "a")


def test_a_finite_mixture_ends(tmp_path):
    make_shards(tmp_path / "a", [800])
    make_shards(tmp_path / "b", [800], start=100_000)
    loader = streamtok.loader({"a": tmp_path / "a", "b": tmp_path / "b"}, weights={"a": 0.5, "b": 0.5}, primary="a",
                              epochs=1, seq_len=T, batch_size=B, split="all", metrics=False)
    batches = list(loader)
    check_located(loader, batches, [0, len(batches) - 1])
    with pytest.raises(ConfigError, match="past the end"):
        loader.locate(len(batches))


# -- the command ------------------------------------------------------------------------------


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["locate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_prints_the_rows_from_a_checkpoint(tmp_path, capsys):
    make_shards(tmp_path / "d", [900, 700])
    loader = streamtok.loader(tmp_path / "d", seq_len=T, batch_size=B, split="all", seed=4, epochs=None,
                              rank=1, world_size=2, metrics=False)
    it = iter(loader)
    for _ in range(7):
        next(it)
    torch.save({"model": {}, "data": {"train": loader.state_dict()}}, tmp_path / "ckpt.pt")
    (tmp_path / "state.json").write_text(json.dumps(loader.state_dict()))
    for path in ("ckpt.pt", "state.json"):
        code, out, err = _cli(capsys, str(tmp_path / path), "--step", "40", "--rank", "1", "--json")
        assert code == 0, err
        printed = [json.loads(line) for line in out.splitlines()]
        assert [(p["shard"], p["offset"]) for p in printed] == [(r.shard, r.offset) for r in loader.locate(40)]
    code, _, err = _cli(capsys, str(tmp_path / "state.json"), "--step", "1", "--rank", "2")
    assert code == 2 and "not a rank of world size 2" in err


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda s: s.pop("origin"), "no 'origin'"),
        (lambda s: s["origin"].update(seq_len="16"), "origin.seq_len"),
        (lambda s: s["origin"].update(source=["/x", 3]), "origin.source"),
        (lambda s: s["origin"].update(evil=1), "unknown keys"),
        (lambda s: s["origin"].update(seed=99), "seed"),  # rebuilt, then refused by the fingerprint check
    ],
)
def test_cli_refuses_a_tampered_origin(tmp_path, capsys, tamper, message):
    make_shards(tmp_path / "d", [900])
    state = streamtok.loader(tmp_path / "d", seq_len=T, batch_size=B, split="all", metrics=False).state_dict()
    tamper(state)
    (tmp_path / "s.json").write_text(json.dumps(state))
    code, _, err = _cli(capsys, str(tmp_path / "s.json"), "--step", "0")
    assert code == 2 and message in err, err


def test_cli_refuses_a_fifo_instead_of_waiting_on_it(tmp_path, capsys):
    import os

    os.mkfifo(tmp_path / "state.json")
    code, _, err = _cli(capsys, str(tmp_path / "state.json"), "--step", "0")
    assert code == 2 and "not a regular file" in err


def test_cli_decodes_with_the_tokenize_manifest(tmp_path, capsys):
    text = tmp_path / "plays.txt"
    text.write_text("\n\n".join(f"Scene {i}. Enter the player number {i}, speaking plainly." for i in range(300)))
    assert cli.main(["tokenize", str(text), "--out", str(tmp_path / "shards"), "--no-progress"]) == 0
    capsys.readouterr()
    loader = streamtok.loader(tmp_path / "shards", seq_len=T, batch_size=B, split="all", documents="mask", metrics=False)
    torch.save({"loader": loader.state_dict()}, tmp_path / "ckpt.pt")
    code, out, err = _cli(capsys, str(tmp_path / "ckpt.pt"), "--step", "2", "--text")
    assert code == 0, err
    from streamtok.locate import step_input
    from streamtok.prep.encoding import load_encoding

    enc = load_encoding("gpt2")
    rows = loader.collator.gather(step_input(loader.collator, 2)).numpy()
    for row in rows:
        assert repr(enc.decode(row.tolist())) in out
    assert "document" in out


def test_state_dict_gives_a_copy_of_the_origin(shard_dir):
    """Editing a saved checkpoint dict never edits the loader that gave it."""
    loader = streamtok.loader(shard_dir[0], seq_len=16, batch_size=2, metrics=False)
    state = loader.state_dict()
    state["origin"]["seq_len"] = 999
    assert loader.state_dict()["origin"]["seq_len"] == 16
