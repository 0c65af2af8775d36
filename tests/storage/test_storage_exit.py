"""A script that reads a batch from an object store and ends exits cleanly (requests still in flight).

The loader reads ahead, so when such a script ends, ranged GETs are in flight on the storage
loop. Before they were cancelled at exit, obstore's runtime threads completed them while the
interpreter was being torn down: SIGSEGV, SIGABRT or SIGBUS after the script's last line, in
10 of 12 runs (the README's object-storage snippets hit it). Two runs miss it about 3% of the
time on the old code at that rate.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from s3_server import s3, s3_bucket  # noqa: F401

from _util import make_shards

SCRIPT = """
import streamtok

loader = streamtok.loader({url!r}, seq_len=256, batch_size=8, split="all")
x, y = next(iter(loader))  # the loader reads ahead: requests are in flight from here on
print("read", tuple(x.shape))
"""


@pytest.mark.slow
def test_a_script_that_read_a_remote_batch_exits_0(s3_bucket, tmp_path):
    server, bucket = s3_bucket
    make_shards(tmp_path / "shards", [100_000, 100_000], dtype=np.uint16)
    server.upload_dir(tmp_path / "shards", bucket, "shards/")
    env = {**os.environ, "STREAMTOK_CACHE_DIR": str(tmp_path / "cache"), "STREAMTOK_METRICS": "0"}
    code = SCRIPT.format(url=f"s3://{bucket}/shards/")
    for _ in range(2):
        done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
        assert (done.returncode, done.stdout) == (0, "read (8, 256)\n"), done.stderr[-3000:]
