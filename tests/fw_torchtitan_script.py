"""torchtitan's own CheckpointManager (DCP) saving and loading a TitanLoader, for tests/test_frameworks_torchtitan.py.

``python fw_torchtitan_script.py DATA OUT DP [LOAD_FROM]``, under torchrun with DP processes
(or alone for DP=1): builds TitanLoader from its Config as torchtitan's trainer does, with a
tiny model and torchtitan's optimizer and LR-scheduler containers. If LOAD_FROM is given, it
first loads LOAD_FROM/ckpt/step-K (saved at another DP degree) and reads to the epoch's end
(``OUT/loaded_rank<r>.json``); then, afresh, it reads one epoch, saving OUT/ckpt/step-K on the
way (``OUT/run_rank<r>.json``). The files hold the window starts of each step.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.stateful import Stateful
from torchtitan.components.checkpoint import CheckpointManager
from torchtitan.components.optimizer import LRSchedulersContainer, OptimizersContainer
from torchtitan.components.optimizer.optimizer import ParamGroupConfig

from streamtok.frameworks.torchtitan import TitanLoader

T, GLOBAL_B, K = 16, 4, 5


class TrainState(Stateful):
    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": torch.tensor(self.step)}

    def load_state_dict(self, state):
        self.step = int(state["step"])


def run(data, out, dp, rank, load_from=None):
    titan = TitanLoader.Config(dataset_path=data, split="all", epochs=1).build(
        dp_world_size=dp, dp_rank=rank, seq_len=T, local_batch_size=GLOBAL_B // dp, tokenizer=None, snapshot_every_n_steps=None,
    )
    model = torch.nn.Embedding(64, 4)
    optimizers = OptimizersContainer.Config(
        param_groups=[ParamGroupConfig(pattern=".*", optimizer_name="AdamW", optimizer_kwargs={"lr": 1e-3})],
        implementation="for-loop",
    ).build(model_parts=[model])
    schedulers = LRSchedulersContainer(optimizers, lambda step: 1.0)
    train_state = TrainState()
    folder = load_from or out
    ckpt = CheckpointManager(
        CheckpointManager.Config(enable=True, folder="ckpt", interval=K, keep_latest_k=0),
        dataloader=titan, model_parts=[model], optimizers=optimizers, lr_schedulers=schedulers,
        states={"train_state": train_state}, sd_adapter=None, base_folder=folder,
    )
    if load_from is not None:
        assert ckpt.load(step=K), "no checkpoint loaded"
        assert train_state.step == K
    starts = []
    for inputs, labels in titan:
        x = inputs["input"]
        loss = model(x % 64).float().mean()
        loss.backward()
        optimizers.step()
        optimizers.zero_grad()
        schedulers.step()
        train_state.step += 1
        starts.append(x[:, 0].tolist())
        if load_from is None and train_state.step == K:
            ckpt.save(curr_step=K)
    with open(os.path.join(out, f"{'run' if load_from is None else 'loaded'}_rank{rank}.json"), "w") as f:
        json.dump(starts, f)
    ckpt.close()


def main(data, out, dp, load_from=None):
    distributed = dp > 1
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    try:
        if load_from is not None:
            run(data, out, dp, rank, load_from)
        run(data, out, dp, rank)
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
