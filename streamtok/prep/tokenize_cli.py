"""The ``streamtok tokenize`` command: its options, and which engine runs them.

The work itself is in :mod:`.tokenize` (one machine, or Ray tasks) and :mod:`.tasks`
(independent array tasks and ``--finalize``); this module only parses and dispatches.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import ConfigError
from . import tokenize
from .sources import ReadOptions
from .tasks import finalize, tokenize_task
from .tokenize import ENGINES, FILE_SEPARATOR, TokenizeConfig, parse_count, tokenize_files
from .units import UNIT_BYTES


def _separator(text: str) -> str:
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


def register(subparsers: Any) -> None:
    """Add ``streamtok tokenize`` to the ``streamtok`` command.

    Args:
        subparsers: from ``ArgumentParser.add_subparsers``.
    """
    p = subparsers.add_parser(
        "tokenize", help="tokenize text files into token shards",
        description=tokenize.__doc__.split("\n\n")[0].replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help=".txt, .jsonl or .parquet files, hf://datasets/REPO[/GLOB], or - for stdin")
    p.add_argument("--out", metavar="DIR", help="output directory (resumed if it holds an unfinished run)")
    p.add_argument("--encoding", default="gpt2", help="tiktoken encoding (default gpt2, works offline)")
    p.add_argument("--tokenizer", metavar="PATH|REPO", help="a Hugging Face tokenizer.json, its directory, or a Hub repo id, instead of --encoding")
    p.add_argument("--format", default="auto", choices=["auto", "txt", "jsonl", "parquet"], help="input format (default: by suffix)")
    p.add_argument("--separator", type=_separator, default="\n\n", help=r"text document separator, with \n escapes (default '\n\n': a blank line)")
    per_doc = p.add_mutually_exclusive_group()
    per_doc.add_argument("--doc-per-line", action="store_true", help=r"one document per line (same as --separator '\n')")
    per_doc.add_argument("--doc-per-file", action="store_true", help="each text file is one document (read whole; same as --separator '\\0')")
    p.add_argument("--field", default="text", help="JSON key / parquet column with the text (default text)")
    p.add_argument("--utf8-errors", default="strict", choices=["strict", "replace", "ignore"], help="bad UTF-8: fail (default), replace or ignore")
    p.add_argument("--shard-tokens", type=parse_count, default=100_000_000, metavar="N", help="tokens per shard (default 100M)")
    p.add_argument("--val-tokens", type=parse_count, default=0, metavar="N", help="first N tokens (to a document end) go to *_val_* shards")
    p.add_argument("--shard-format", default="bin", choices=["bin", "npy"], help="llm.c .bin (default) or .npy")
    p.add_argument("--prefix", default="data", help="shard names: PREFIX_train_000000.bin (default data)")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: the CPUs this process may use)")
    p.add_argument("--engine", default="local", choices=ENGINES, help="local process pool (default) or Ray tasks (pip install 'streamtok[ray]')")
    p.add_argument("--address", help="Ray cluster to join (default: a local one, or RAY_ADDRESS)")
    p.add_argument("--num-tasks", type=int, metavar="N", help="run as one of N independent tasks (Slurm/Kubernetes arrays); then --finalize")
    p.add_argument("--task-index", type=int, metavar="I", help="this task's index, 0..N-1 (default $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX)")
    p.add_argument("--finalize", metavar="DIR", help="assemble the shards and manifest from the tasks' output in DIR")
    p.add_argument("--unit-size", type=parse_count, default=UNIT_BYTES, metavar="BYTES", help="text bytes per Ray/array work unit (default 32 MiB; the output does not depend on it)")
    p.add_argument("--overwrite", action="store_true", help="start over in a --out that holds other shards or another run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``streamtok tokenize`` (see ``--help``).

    Args:
        args: the parsed command line.
    """
    if args.finalize is not None:
        if args.inputs or args.out or args.num_tasks is not None:
            raise ConfigError("--finalize DIR takes no inputs, --out or --num-tasks: it reads what the tasks wrote in DIR")
        manifest = finalize(args.finalize, progress=not args.no_progress, overwrite=args.overwrite)
        return 0 if manifest else 2
    if not args.inputs or not args.out:
        raise ConfigError("give INPUT files and --out DIR (or --finalize DIR)")
    separator = "\n" if args.doc_per_line else FILE_SEPARATOR if args.doc_per_file else args.separator
    read = ReadOptions(fmt=args.format, separator=separator, field=args.field, utf8_errors=args.utf8_errors)
    config = TokenizeConfig(
        encoding=args.encoding, tokenizer=args.tokenizer, read=read, shard_tokens=args.shard_tokens,
        val_tokens=args.val_tokens, shard_format=args.shard_format, prefix=args.prefix,
    )
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    if args.num_tasks is not None or args.task_index is not None:
        index = args.task_index if args.task_index is not None else _array_index()
        if args.num_tasks is None or index is None:
            raise ConfigError("--num-tasks N and --task-index I go together (I defaults to $SLURM_ARRAY_TASK_ID / $JOB_COMPLETION_INDEX)")
        tokenize_task(
            args.inputs, args.out, config=config, num_tasks=args.num_tasks, task_index=index,
            unit_bytes=args.unit_size, progress=not args.no_progress,
        )
        return 0
    tokenize_files(
        args.inputs, args.out, config=config, workers=args.workers, progress=not args.no_progress,
        overwrite=args.overwrite, engine=args.engine, address=args.address, unit_bytes=args.unit_size,
    )
    return 0


def _array_index() -> int | None:
    for var in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None
