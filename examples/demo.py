"""The README's first command: tokenize the shipped plays, then train a small GPT on CPU.

    python examples/demo.py
    python examples/demo.py --steps 4 --shards /tmp/shards --run /tmp/run   # a quick check

1. ``streamtok tokenize`` turns ``data/shakespeare/*.txt`` (public domain, 2 MB) into llm.c
   shards in ``data/shards/`` with the real GPT-2 encoding, offline; the first 60k tokens go
   to a ``val`` shard. Re-running finds the finished shards and skips the work.
2. ``examples/train_gpt.py`` trains for a minute or two on CPU (loss falls from ~10.8),
   checkpointing every 50 steps into ``runs/shakespeare/``, and prints how to resume it and
   how to watch it with ``streamtok-monitor``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import train_gpt  # noqa: E402

from streamtok.cli import main as streamtok_main  # noqa: E402

TEXTS = sorted(glob.glob(os.path.join(ROOT, "data", "shakespeare", "*.txt")))
SHARDS = os.path.join(ROOT, "data", "shards")
RUN = os.path.join(ROOT, "runs", "shakespeare")


def shown(path: str) -> str:
    """``path`` relative to the current directory when it is inside it (shorter hints), else absolute."""
    path = os.path.abspath(path)
    return os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path


def tokenize_plays(shards: str = SHARDS) -> None:
    """``streamtok tokenize`` the shipped plays into ``shards`` (skipped when they are already there); exits on failure."""
    print(f"== tokenizing {len(TEXTS)} plays into {shards}/ (GPT-2, offline)", flush=True)
    code = streamtok_main(
        ["tokenize", *TEXTS, "--out", shards, "--doc-per-file", "--val-tokens", "60000",
         "--shard-tokens", "300000", "--prefix", "shakespeare", "--no-progress"]
    )
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    p.add_argument("--shards", default=SHARDS, help="where the shards go (default data/shards)")
    p.add_argument("--run", default=RUN, help="checkpoint and log directory (default runs/shakespeare)")
    args = p.parse_args(argv)
    shards, run = shown(args.shards), shown(args.run)
    tokenize_plays(shards)
    every = str(min(50, args.steps))
    print(f"== training a small GPT on CPU; checkpoints in {run}/", flush=True)
    train_gpt.main(
        ["--data", shards, "--out", run, "--steps", str(args.steps), "--n-embd", "64", "--n-layer", "2",
         "--batch-size", "16", "--seq-len", "64", "--eval-every", every, "--ckpt-every", every]
    )


if __name__ == "__main__":
    main()
