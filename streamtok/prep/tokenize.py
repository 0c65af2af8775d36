"""``streamtok tokenize``: text files to token shards, in parallel, crash-safe and resumable.

Pipeline: the main process reads the inputs in 256 KiB chunks of whole documents
(:mod:`.sources`), ``--workers`` processes encode them with tiktoken (:mod:`._encode`), and
the main process takes the results back *in input order* and cuts them into shards
(:mod:`.shardsink`). The output therefore does not depend on the number of workers.
GPT-2 encodes ~14 MB/s of English text per core (Shakespeare, 2-core sandbox); reading,
splitting, shipping and copying add a few percent of CPU (two workers used 2.53 CPU-s where
one used 2.45 for 30 MB), so throughput grows with the cores (``benchmarks/bench_tokenize.py``).

Output: each document is preceded by the end-of-text token, as llm.c writes it; ids are
uint16 when the vocabulary fits, else uint32; shards hold ``--shard-tokens`` ids (the last of
each split fewer). With ``--val-tokens N`` the first documents -- up to the first document
start at or after N tokens -- go to ``<prefix>_val_*`` shards, the rest to ``<prefix>_train_*``.
Beside each shard goes its document index ``<shard>.docidx`` (the end-of-text offsets, which
``documents="mask"|"bos"|"pack"`` loaders read instead of scanning the shard), listed with its
sha256 in the manifest; it is keyed by content, not mtime, so it is byte-identical too.

Resume: ``<out>/manifest.json`` is rewritten (atomically) after every shard with the settings,
the shards so far, and where the next shard's tokens start: an input, a chunk boundary in it
(byte offset or parquet row), and how many tokens of that chunk are already in shards. A
re-run with the same settings and unchanged inputs continues from there and writes the same
files an uninterrupted run writes; other settings are refused, naming the difference. The
final manifest has ``"complete": true``, totals and a sha256 per shard.

Beyond one machine (:mod:`.units`): ``--engine ray`` encodes work units (32 MiB ranges cut at
document boundaries) as Ray tasks that read their own ranges (:mod:`.ray_engine`), and
``--num-tasks N --task-index I`` + ``--finalize`` runs them as N independent jobs
(:mod:`.tasks`); both feed the same single writer in unit order, so their shards and manifest
are byte-identical to this one-process run's. ``--tokenizer`` takes any Hugging Face
``tokenizer.json`` (:mod:`.hf_tokenizer`); ``hf://datasets/REPO[/GLOB]`` inputs come from the
Hub cache (:mod:`.inputs`).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, InputFormatError
from ._encode import Encoded, EncodeJob, EncodePool
from .encoding import eot_token, load_encoding, token_dtype
from .inputs import resolve_inputs
from .manifest import MANIFEST, Checkpoint, load_resume, write_manifest
from .outdir import clear_out_dir, foreign_entries, lock_out_dir, prepare_out_dir
from .shardsink import ShardPlan, ShardSink
from .sources import STDIN, Chunk, ReadOptions, iter_chunks
from .units import UNIT_BYTES, Piece, check_separator, plan_units, resume_units

# Text files hold no NUL bytes, so splitting on it keeps each file one document.
FILE_SEPARATOR = "\0"
_PREFIX = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
KILL_ENV = "STREAMTOK_TEST_KILL_AFTER_SHARD"  # "k" or "k:renamed": SIGKILL self, for tests
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class TokenizeConfig:
    """Everything that decides the output bytes of ``streamtok tokenize``.

    Args:
        encoding: a tiktoken encoding name.
        tokenizer: a Hugging Face ``tokenizer.json`` (path, directory or Hub repo id) used
            instead of ``encoding``.
        read: how inputs are split into documents.
        shard_tokens: tokens per shard.
        val_tokens: tokens (rounded up to a document end) written to ``val`` shards first.
        shard_format: ``"bin"`` (llm.c header) or ``"npy"``.
        prefix: shard file name prefix.
    """

    encoding: str = "gpt2"
    tokenizer: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)
    shard_tokens: int = 100_000_000
    val_tokens: int = 0
    shard_format: str = "bin"
    prefix: str = "data"

    def __post_init__(self) -> None:
        if self.shard_tokens < 1:
            raise ConfigError(f"shard_tokens must be positive, not {self.shard_tokens}")
        if self.val_tokens < 0:
            raise ConfigError(f"val_tokens must be >= 0, not {self.val_tokens}")
        if self.shard_format not in ("bin", "npy"):
            raise ConfigError(f"shard format must be 'bin' or 'npy', not {self.shard_format!r}")
        if not _PREFIX.fullmatch(self.prefix):
            raise ConfigError(
                f"prefix must be a plain file name part (letters, digits, '.', '_', '-', not starting with '.'), not {self.prefix!r}"
            )


def tokenize_files(
    inputs: list[str],
    out_dir: str,
    *,
    config: TokenizeConfig,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    engine: str = "local",
    address: str | None = None,
    unit_bytes: int = UNIT_BYTES,
) -> dict[str, Any]:
    """Tokenize ``inputs`` into shards in ``out_dir``, resuming an interrupted run there.

    Args:
        inputs: text, ``.jsonl`` or parquet files, ``hf://datasets/REPO[/GLOB]``, or ``"-"``
            for stdin (once).
        out_dir: the output directory (created if needed).
        config: the settings that decide the output.
        workers: encoding processes (local engine; with Ray and no ``address``, the CPUs of
            the local cluster); default the CPUs this process may use.
        progress: show a progress bar on stderr.
        overwrite: delete an earlier run's manifest and every ``*.bin``/``*.npy`` (and its
            ``.docidx``) in ``out_dir`` and start over, instead of refusing a directory that
            holds other files.
        engine: ``"local"`` (a process pool) or ``"ray"`` (Ray tasks; the ``ray`` extra).
        address: the Ray cluster to join (default: start a local one, or the one ``ray``
            is already connected to).
        unit_bytes: bytes of text per Ray task (the output does not depend on it).

    Returns:
        The final manifest (also in ``<out_dir>/manifest.json``).

    Raises:
        ConfigError: bad settings or inputs, ``out_dir`` not a directory, locked by another
        run, or holding files of something else; StateMismatchError: ``out_dir`` holds a run
        made with other settings or other stdin; InputFormatError: an input cannot be parsed,
        or the inputs hold no document.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if unit_bytes < 1:
        raise ConfigError(f"unit_bytes must be positive, not {unit_bytes}")
    run = prepare_run(inputs, config)
    if engine == "ray":
        check_separator(config.read, run.paths)
    prepare_out_dir(out_dir)
    lock = lock_out_dir(out_dir)
    try:
        ckpt, done = open_out(out_dir, config, run.settings, overwrite)
        if done is not None:
            return done
        if engine == "local":
            with EncodePool(run.job, workers or available_cpus()) as pool:
                pieces = (_piece(c, e) for c, e in pool.map(_chunks(run.paths, config.read, ckpt)))
                return write_all(out_dir, run, ckpt, pieces, progress)
        from .ray_engine import RayEncoder

        units = resume_units(plan_units(run.paths, run.sizes, config.read, unit_bytes), ckpt.source, ckpt.start)
        with RayEncoder(run.job, address=address, num_cpus=workers) as ray_pool:
            return write_all(out_dir, run, ckpt, ray_pool.map(units), progress)
    finally:
        lock.release()


@dataclass(frozen=True)
class Run:
    """A prepared run: the inputs as local paths, their sizes, the output settings and the encoding job."""

    paths: list[str]
    sizes: list[int]
    settings: dict[str, Any]
    job: EncodeJob
    stamps: tuple[tuple[int, int, int] | None, ...] = ()  # (size, mtime_ns, ctime_ns) when planned; None: stdin


def prepare_run(inputs: list[str], config: TokenizeConfig) -> Run:
    """Resolve and check the inputs and the tokenizer, and compute the settings a resume must match.

    Args:
        inputs: as for :func:`tokenize_files`.
        config: the settings.
    """
    if not inputs:
        raise ConfigError("no inputs given")
    if inputs.count(STDIN) > 1:
        raise ConfigError("stdin ('-') can be given only once")
    # The tokenizer first: a gated or missing one is said before any hf://datasets input is downloaded.
    if config.tokenizer is not None:
        from .hf_tokenizer import resolve_tokenizer

        hf = resolve_tokenizer(config.tokenizer)
        n_vocab, boundary, encoding = hf.n_vocab, hf.boundary_id, {"encoding": None, "tokenizer": hf.identity()}
        job_extra = {"tokenizer_path": hf.path, "boundary": hf.boundary_id}
    else:
        enc = load_encoding(config.encoding)
        n_vocab, boundary, encoding, job_extra = enc.n_vocab, eot_token(enc), {}, {}
    resolved = resolve_inputs(inputs, config.read)
    for src in resolved:
        if src.path != STDIN and not os.path.isfile(src.path):
            what = "a directory, not a file" if os.path.isdir(src.path) else "no such input file"
            raise InputFormatError(f"{src.path}: {what}; give text, .jsonl or .parquet files, hf://datasets/REPO, or - for stdin")
    paths = [src.path for src in resolved]
    dtype = token_dtype(n_vocab).name
    settings = {
        **{k: v for k, v in asdict(config).items() if k not in ("read", "tokenizer")},
        **{k: v for k, v in asdict(config.read).items() if k != "block_bytes"},
        **encoding,
        "dtype": dtype,
        "n_vocab": n_vocab,
        "eot_token": boundary,
        "eot_position": "before each document",
        "sources": [src.entry for src in resolved],
    }
    stamps = tuple(None if p == STDIN else input_stamp(p) for p in paths)
    sizes = [0 if s is None else s[0] for s in stamps]
    return Run(paths, sizes, settings, EncodeJob(config.encoding, dtype, tuple(paths), config.read, **job_extra), stamps)


def input_stamp(path: str) -> tuple[int, int, int]:
    """An input's size, mtime and ctime (ns): a rewrite moves the ctime even when size and mtime are kept."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_inputs_unchanged(run: Run) -> None:
    """Refuse a run whose inputs changed while they were read (its shards would mix old and new text).

    Args:
        run: the prepared run (its stamps were taken before reading).

    Raises:
        InputFormatError: an input was rewritten, truncated or removed, named.
    """
    for path, stamp in zip(run.paths, run.stamps):
        if stamp is None:
            continue
        try:
            now: tuple[int, int, int] | None = input_stamp(path)
        except OSError:
            now = None
        if now != stamp:
            raise InputFormatError(
                f"{path}: the input changed while it was tokenized ({'removed' if now is None else f'{stamp[0]} -> {now[0]} bytes, modified'}); "
                "the shards written may mix old and new text and the run was not marked complete: delete --out "
                "(or pass --overwrite) and tokenize again when the input is final"
            )


def open_out(out_dir: str, config: TokenizeConfig, settings: dict[str, Any], overwrite: bool) -> tuple[Checkpoint, dict[str, Any] | None]:
    # With the directory locked: refuse foreign files, then read the resume point (or the done run).
    if overwrite:
        clear_out_dir(out_dir)  # other files stay: the loader reads only *.bin and *.npy
    foreign = [] if overwrite else foreign_entries(out_dir, config.prefix, config.shard_format)
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(
            f"--out {out_dir}: holds files this run would not write ({listed}); the loader reads every "
            "shard of a directory, so use an empty directory, or pass --overwrite to delete the old "
            "manifest and the *.bin/*.npy files (and their .docidx indexes) there"
        )
    done, ckpt = load_resume(os.path.join(out_dir, MANIFEST), settings)
    if done is not None:
        print(f"{out_dir}: already complete ({done['n_tokens']:,} tokens); nothing to do", file=sys.stderr)
        return Checkpoint.start_of_run(), done
    _remove_stale_temps(out_dir, config.prefix)
    return ckpt or Checkpoint.start_of_run(), None


def write_all(out_dir: str, run: Run, ckpt: Checkpoint, pieces: Iterable[Piece], progress: bool) -> dict[str, Any]:
    # The one writer: pieces in stream order -> shards, a checkpoint after each, the final manifest.
    settings = run.settings
    plan = ShardPlan(
        out_dir, settings["prefix"], settings["shard_format"], settings["shard_tokens"], settings["val_tokens"],
        settings["dtype"], settings["eot_token"],
    )
    sink = ShardSink(plan, ckpt.sink)
    shards = list(ckpt.shards)
    write_manifest(out_dir, settings, shards, ckpt)
    pieces = _checked_boundaries(pieces, settings["eot_token"], run.paths)
    with _progress(settings, ckpt, progress) as bar:
        totals = _encode_all(pieces, ckpt, sink, shards, bar, lambda c: write_manifest(out_dir, settings, shards, c))
    check_inputs_unchanged(run)
    if sink.position == 0:
        raise InputFormatError(
            f"no documents in {', '.join('stdin' if s['path'] == STDIN else s['path'] for s in settings['sources'])}: "
            "the input is empty or only whitespace (check --format, --field and --separator)"
        )
    sink.finish()
    shards.extend(sink.written)
    final = write_manifest(out_dir, settings, shards, None, totals={**totals, "n_tokens": sink.position})
    _summary(final, out_dir)
    return final


def _piece(chunk: Chunk, enc_out: Encoded) -> Piece:
    return Piece(
        chunk.source, chunk.start, chunk.end, enc_out.tokens, enc_out.n_docs, enc_out.n_chars, chunk.nbytes,
        chunk.line, chunk.prefix_sha256,
    )


def _encode_all(
    pieces: Iterable[Piece],
    ckpt: Checkpoint,
    sink: ShardSink,
    shards: list[dict[str, Any]],
    bar: Any,
    save: Callable[[Checkpoint], Any],
) -> dict[str, int]:
    # Feed the pieces' tokens to the sink in order; after each shard, save a checkpoint that
    # points at this piece's start and the tokens of it already in shards.
    kill_at, kill_stage = _kill_hook()
    totals = dict(ckpt.totals)
    skip = ckpt.skip
    t0, tokens_run = time.perf_counter(), 0
    for piece in pieces:
        # The checkpoint's tokens to skip were counted in the interrupted run's piece, which
        # may span several of this run's pieces (they are cut where this run's blocks end).
        skipped = min(skip, len(piece.tokens))
        skip -= skipped
        tokens = piece.tokens[skipped:]
        for used in sink.feed(tokens):
            shards.extend(sink.written)
            sink.written.clear()
            if len(shards) - 1 == kill_at and kill_stage == "renamed":
                os.kill(os.getpid(), signal.SIGKILL)
            save(Checkpoint(piece.source, piece.start, piece.line, skipped + used, dict(totals), sink.state(), (), piece.prefix_sha256))
            if len(shards) - 1 == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        totals["n_docs"] += piece.n_docs
        totals["n_chars"] += piece.n_chars
        totals["n_bytes"] += piece.n_bytes
        tokens_run += len(tokens)
        bar.update(piece.n_bytes)
        bar.set_postfix_str(f"{tokens_run / max(time.perf_counter() - t0, 1e-9) / 1e6:.2f}M tok/s", refresh=False)
    return totals


def _checked_boundaries(pieces: Iterable[Piece], eot: int, paths: list[str]) -> Iterator[Piece]:
    # Every document is preceded by exactly one boundary id: more means the text produced it
    # (a forged document start), fewer that the encoder dropped one. One compare per token.
    for piece in pieces:
        found = int(np.count_nonzero(np.asarray(piece.tokens) == eot))
        if found != piece.n_docs:
            raise _forged(piece, found, eot, paths)
        yield piece


def _forged(piece: Piece, found: int, eot: int, paths: list[str]) -> InputFormatError:
    name = "stdin" if paths[piece.source] == STDIN else paths[piece.source]
    where = f"line {piece.line}" if piece.line else f"byte {piece.start}"
    return InputFormatError(
        f"{name} (the chunk from {where}): {piece.n_docs} documents but {found} "
        f"boundary tokens (id {eot}) in their tokens: the text encodes to the boundary token, which would forge "
        "document starts; use a tokenizer whose boundary is a special token text cannot produce (the run "
        "was not marked complete)"
    )


def _chunks(inputs: list[str], opts: ReadOptions, ckpt: Checkpoint) -> Iterator[Chunk]:
    for i in range(ckpt.source, len(inputs)):
        first = i == ckpt.source
        yield from iter_chunks(
            inputs[i], i, opts, start=ckpt.start if first else 0, line=ckpt.line if first else 1,
            stdin_sha256=ckpt.stdin_sha256 if first else None,
        )


def _kill_hook() -> tuple[int | None, str]:
    value = os.environ.get(KILL_ENV)
    if not value:
        return None, ""
    index, _, stage = value.partition(":")
    return int(index), stage or "recorded"


def _remove_stale_temps(out_dir: str, prefix: str) -> None:
    # write_shard's temporaries are ".<name>.<random>.tmp"; a killed run leaves one behind.
    for name in os.listdir(out_dir):
        if name.endswith(".tmp") and (name.startswith(f".{prefix}_") or name.startswith(f".{MANIFEST}.")):
            os.unlink(os.path.join(out_dir, name))


def _progress(settings: dict[str, Any], ckpt: Checkpoint, enabled: bool):
    from tqdm import tqdm

    sizes = [s.get("nbytes") for s in settings["sources"]]
    total = None if None in sizes else sum(sizes)
    return tqdm(
        total=total, initial=ckpt.totals["n_bytes"], unit="B", unit_scale=True, desc="tokenize",
        disable=not enabled, smoothing=0.1, dynamic_ncols=True,
    )


def _summary(manifest: dict[str, Any], out_dir: str) -> None:
    n_tok, n_chars = manifest["n_tokens"], manifest["n_chars"]
    ratio = n_chars / n_tok if n_tok else 0.0
    splits = ", ".join(f"{v['n_shards']} {k}" for k, v in manifest["splits"].items() if v["n_shards"])
    print(
        f"{n_tok:,} tokens from {n_chars:,} chars, {ratio:.2f} chars/token; "
        f"{manifest['n_docs']:,} documents in {len(manifest['shards'])} shards ({splits or 'none'}) in {out_dir}"
    )
    if manifest["val_tokens"] and not manifest["splits"]["train"]["n_shards"]:
        print(f"warning: --val-tokens {manifest['val_tokens']:,} took every token; no train shards", file=sys.stderr)


def parse_count(text: str) -> int:
    """``"100M"``, ``"1.5B"``, ``"10_000"`` or ``"64K"`` as an int (for --shard-tokens and --val-tokens).

    Args:
        text: a number with an optional K, M, B or G suffix (powers of 1000).
    """
    scale = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}
    t = text.strip().replace("_", "").replace(",", "").upper()
    mult = scale.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in scale else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 100M, 5000000)") from None
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole, non-negative count: {text!r}")
    return int(value)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
