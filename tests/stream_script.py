"""A stand-in training loop for the resume tests: logs batch hashes, checkpoints every step.

Run as ``python stream_script.py DATA LOG CKPT MODE WORKERS EPOCHS [KILL_AFTER]``: it resumes
from CKPT when that file exists, and SIGKILLs itself right after checkpointing step KILL_AFTER.
"""

import json
import os
import signal
import sys

from _util import batch_hash

import streamtok

data, log, ckpt, mode, workers, epochs = sys.argv[1:7]
kill_after = int(sys.argv[7]) if len(sys.argv) > 7 else None
loader = streamtok.loader(data, seq_len=32, batch_size=4, mode=mode, num_workers=int(workers), epochs=int(epochs), seed=5)
step = 0
if os.path.exists(ckpt):
    with open(ckpt) as f:
        saved = json.load(f)
    loader.load_state_dict(saved["loader"])
    step = saved["step"]
with open(log, "a") as out:
    for x, y in loader:
        step += 1
        out.write(batch_hash(x, y) + "\n")
        out.flush()
        tmp = ckpt + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"loader": loader.state_dict(), "step": step}, f)
        os.replace(tmp, ckpt)
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
