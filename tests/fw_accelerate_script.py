"""A small Accelerate training loop on a streamtok loader, for tests/test_frameworks_accelerate.py.

``python -m torch.distributed.run --nproc_per_node=2 fw_accelerate_script.py DATA OUT``:
trains one epoch, ``save_state`` after step K, then, in the same processes, a fresh
Accelerator and loader ``load_state`` it and read on to the end. Each process writes
``OUT/run_rank<r>.json``: the window starts and batch hashes it read.
"""

import json
import os
import sys

import torch
from _util import batch_hash
from accelerate import Accelerator

import streamtok
from streamtok.frameworks.accelerate import prepare_loader

T, B, K = 16, 2, 5
data, out = sys.argv[1:3]
ckpt = os.path.join(out, "ckpt")


def build(accelerator):
    loader = streamtok.loader(data, seq_len=T, batch_size=B, split="all", metrics=False)
    model = torch.nn.Embedding(64, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt, prepared = accelerator.prepare(model, opt, prepare_loader(accelerator, loader))
    assert prepared is loader, type(prepared)
    return model, opt, loader


def read(accelerator, model, opt, loader, save_after=None):
    starts, hashes = [], []
    for step, (x, y) in enumerate(loader, 1):
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        loss = model(x % 64).float().mean()
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad()
        starts.append(x[:, 0].tolist())
        hashes.append(batch_hash(x, y))
        if step == save_after:
            accelerator.save_state(ckpt)
    return starts, hashes


acc = Accelerator(cpu=True)
rank = acc.process_index
result = {"world_size": acc.num_processes}
model, opt, loader = build(acc)
result["starts"], result["hashes"] = read(acc, model, opt, loader, save_after=K)
acc.wait_for_everyone()
fresh = Accelerator(cpu=True)
model, opt, loader = build(fresh)
fresh.load_state(ckpt)
result["resumed_starts"], result["resumed_hashes"] = read(fresh, model, opt, loader)
result["files"] = sorted(os.listdir(ckpt))
with open(os.path.join(out, f"run_rank{rank}.json"), "w") as f:
    json.dump(result, f)
# Tear the process group down, then leave without the interpreter's teardown: a C++ thread of
# torch.distributed outlives destroy_process_group() and is destroyed while joinable at exit
# ("terminate called without an active exception", SIGABRT after both ranks wrote their
# results and destroyed the group: 1 run in 8-16 here, once in CI). The results are on disk.
acc.wait_for_everyone()
torch.distributed.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
