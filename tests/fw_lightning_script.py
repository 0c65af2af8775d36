"""Two epochs of a tiny LightningModule on a StreamtokDataModule, for tests/test_frameworks_lightning.py.

``python fw_lightning_script.py DATA OUT DEVICES [CKPT]``: trains on ``DEVICES`` CPU processes
(Lightning's ``ddp``, gloo), from CKPT if given, checkpointing every K steps into OUT/steps and
at each epoch end into OUT/epochs. Each rank writes ``OUT/rank<r>.json``: per step, the
global step, the window starts and the batch hash it trained on.
"""

import json
import os
import sys

import lightning.pytorch as pl
import torch
from _util import batch_hash
from lightning.pytorch.callbacks import ModelCheckpoint

import streamtok
from streamtok.frameworks.lightning import StreamtokDataModule

T, B, K = 16, 2, 7


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(64, 4)
        self.seen = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append([self.global_step, x[:, 0].tolist(), batch_hash(x, y)])
        return self.emb(x % 64).float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_train_end(self):
        with open(os.path.join(out, f"rank{self.global_rank}.json"), "w") as f:
            json.dump(self.seen, f)


def main(data, out, devices, ckpt=None):
    batch = B * 2 // devices  # the same global batch at any number of processes
    dm = StreamtokDataModule(lambda: streamtok.loader(data, seq_len=T, batch_size=batch, split="all", metrics=False))
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=2,
        logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[
            ModelCheckpoint(dirpath=os.path.join(out, "steps"), every_n_train_steps=K, save_top_k=-1),
            ModelCheckpoint(dirpath=os.path.join(out, "epochs"), save_on_train_epoch_end=True, save_top_k=-1),
        ],
    )
    trainer.fit(Tiny(), datamodule=dm, ckpt_path=ckpt)
    if torch.distributed.is_initialized():  # not left to interpreter exit (see fw_accelerate_script.py)
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    data, out, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
    main(data, out, devices, sys.argv[4] if len(sys.argv) > 4 else None)
