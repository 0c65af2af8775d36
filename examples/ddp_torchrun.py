"""The same small GPT, data-parallel under torchrun: each rank reads its own samples.

    torchrun --nproc_per_node=2 examples/ddp_torchrun.py --data data/shards --out runs/ddp
    python examples/ddp_torchrun.py --data data/shards --out runs/ddp --resume   # world size 1

``streamtok.loader`` reads rank and world size from ``torch.distributed``: global step ``g``
takes windows ``[g*B*W, (g+1)*B*W)`` of the epoch's order and rank ``r`` its own ``B`` of
them, so ranks never share a window. The loader's state counts windows, not steps, so a
checkpoint made at world size 2 resumes at world size 1 (or 4) where the epoch left off.
Backend: NCCL on GPUs, gloo on CPU. On GPUs each rank binds its device first
(``torch.cuda.set_device`` and ``device_id=``), so that no rank makes a context on GPU 0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_gpt import GPT, GPTConfig, lr_at, save_checkpoint  # noqa: E402

import streamtok  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/shards")
    p.add_argument("--out", default="runs/ddp")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, default=100, help="global steps in total")
    p.add_argument("--batch-size", type=int, default=8, help="per rank")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=1)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ckpt-every", type=int, default=20)
    p.add_argument("--log-samples", help="directory: each rank appends 'step sha1' per row it trained on")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)  # before anything touches CUDA: this rank's GPU only
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)  # same initial weights on every rank

    loader = streamtok.loader(
        args.data, seq_len=args.seq_len, batch_size=args.batch_size, split="train",
        epochs=None, num_workers=1, pin_memory=cuda,
    )
    train = streamtok.CUDAPrefetcher(loader, device=device)
    cfg = GPTConfig(seq_len=args.seq_len, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(cfg).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path, step = os.path.join(args.out, "ckpt.pt"), 0
    if args.resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optim"])
        train.load_state_dict(ckpt["loader"])  # saved at any world size
        step = ckpt["step"]
    ddp = DDP(model) if distributed else model
    sample_log = None
    if args.log_samples:
        os.makedirs(args.log_samples, exist_ok=True)
        sample_log = open(os.path.join(args.log_samples, f"world{world}_rank{rank}.txt"), "a")

    batches = iter(train)
    while step < args.steps:
        x, y = next(batches)
        if sample_log:
            rows = x.cpu().numpy()
            sample_log.write("".join(f"{step} {hashlib.sha1(r.tobytes()).hexdigest()}\n" for r in rows))
            sample_log.flush()
        for group in optim.param_groups:
            group["lr"] = lr_at(step, args)
        loss = ddp(x, y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step += 1
        if rank == 0 and step % 10 == 0:
            print(f"step {step:4d} | loss {loss.item():.3f} | world size {world}", flush=True)
        if step % args.ckpt_every == 0 or step == args.steps:
            # Every rank's loader is at the same global position; rank 0 writes it.
            if rank == 0:
                save_checkpoint(ckpt_path, {"model": model.state_dict(), "optim": optim.state_dict(),
                                            "loader": train.state_dict(), "step": step})
            if distributed:
                dist.barrier()
    if rank == 0:
        print(f"checkpoint: {ckpt_path} (step {step}, world size {world})")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
