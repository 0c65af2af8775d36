"""The README's first command: tokenize the shipped plays, then train a small GPT on CPU.

    python examples/demo.py

1. ``streamtok tokenize`` turns ``data/shakespeare/*.txt`` (public domain, 2 MB) into llm.c
   shards in ``data/shards/`` with the real GPT-2 encoding, offline; the first 60k tokens go
   to a ``val`` shard. Re-running finds the finished shards and skips the work.
2. ``examples/train_gpt.py`` trains for a minute or two on CPU (loss falls from ~10.8),
   checkpointing every 50 steps into ``runs/shakespeare/``, and prints how to resume it and
   how to watch it with ``streamtok-monitor``.
"""

from __future__ import annotations

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


def main() -> None:
    print(f"== tokenizing {len(TEXTS)} plays into {os.path.relpath(SHARDS, ROOT)}/ (GPT-2, offline)", flush=True)
    code = streamtok_main(
        ["tokenize", *TEXTS, "--out", SHARDS, "--doc-per-file", "--val-tokens", "60000",
         "--shard-tokens", "300000", "--prefix", "shakespeare", "--no-progress"]
    )
    if code:
        sys.exit(code)
    print(f"== training a small GPT on CPU; checkpoints in {os.path.relpath(RUN, ROOT)}/", flush=True)
    train_gpt.main(
        ["--data", SHARDS, "--out", RUN, "--steps", "200", "--n-embd", "64", "--n-layer", "2",
         "--batch-size", "16", "--seq-len", "64", "--eval-every", "50", "--ckpt-every", "50"]
    )


if __name__ == "__main__":
    main()
