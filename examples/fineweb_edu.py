"""From the Hugging Face Hub to training: 3 FineWeb-Edu shards, the last one held out.

    python examples/fineweb_edu.py                 # downloads shards 1-3 (~600 MB) on first use
    streamtok download --shards 1:3 --dir data/fineweb && \\
        python examples/fineweb_edu.py --dir data/fineweb    # the same, download done first

``karpathy/fineweb-edu-100B-gpt2-token-shards`` holds llm.c ``.bin`` shards of 100M GPT-2
tokens each (a 1024-byte header, then uint16 ids; streamtok checks the header instead of
reading it as 512 tokens). ``ShardLister.from_hub`` downloads only the shards asked for,
once per node (local rank 0 under torchrun; a file lock otherwise), on first use; shard 3 is
then held out for validation, as the fineweb-edu recipe does. Training is
``examples/train_gpt.py``: GPT-2 small with bf16 and ``torch.compile`` on a GPU, a tiny model
on CPU. Needs the network once; afterwards ``HF_HUB_OFFLINE=1`` works from the cache.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_gpt  # noqa: E402

from streamtok import ShardLister, StreamtokError  # noqa: E402
from streamtok.prep.hub import DEFAULT_REPO  # noqa: E402

GPU_MODEL = ["--seq-len", "1024", "--batch-size", "32", "--n-layer", "12", "--n-head", "12", "--n-embd", "768",
             "--lr", "6e-4", "--num-workers", "4", "--compile", "--eval-every", "500", "--ckpt-every", "500"]
CPU_MODEL = ["--seq-len", "128", "--batch-size", "8", "--n-layer", "2", "--n-head", "4", "--n-embd", "64"]


def prepare(shards: str = "1:3", local_dir: str | None = None, repo_id: str = DEFAULT_REPO) -> tuple[ShardLister, ShardLister]:
    """The train and val listers of the chosen shards (downloaded when first listed)."""
    hub = ShardLister.from_hub(repo_id, shards=shards, local_dir=local_dir)
    return hub.split("train", holdout=1), hub.split("val", holdout=1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", default="1:3", help="training shards to fetch (inclusive range or list)")
    p.add_argument("--dir", help="download into this directory (default: the Hugging Face cache)")
    p.add_argument("--out", default="runs/fineweb_edu")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)

    try:
        train, val = prepare(args.shards, args.dir)
    except StreamtokError as exc:  # offline and not cached, or no such shard in the repo
        sys.exit(f"fineweb_edu: {exc}")
    print(f"train: {len(train)} shards, val: {len(val)} shard ({val.paths[0]})")
    model = GPU_MODEL if torch.cuda.is_available() else CPU_MODEL
    train_gpt.main(["--data", *train.paths, *val.paths, "--out", args.out, "--steps", str(args.steps), *model]
                   + (["--resume"] if args.resume else []))


if __name__ == "__main__":
    main()
