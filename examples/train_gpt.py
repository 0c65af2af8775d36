"""Train a small GPT from streamtok shards: the script to copy into your own project.

    python examples/train_gpt.py --data data/shards --out runs/shakespeare
    python examples/train_gpt.py --data data/shards --out runs/shakespeare --resume --steps 800
    python examples/train_gpt.py --data data/mix --mix web=0.7,code=0.3 --anneal 300:web=0.2,code=0.8

Data: ``streamtok.loader`` (shuffled train split) behind a ``CUDAPrefetcher`` (the batch's
2-byte tokens cross PCIe and become int64 on the GPU; on CPU it does the same bookkeeping).
Validation: the held-out split in ``sequential`` mode, every token once, the same batches
every time. Checkpoints hold the model, the optimizer and the loader's position together,
written to a temporary file and renamed, so a run killed at any moment resumes from the last
complete checkpoint and sees exactly the batches an uninterrupted run would have seen.
A checkpoint also holds the model and data settings it was made with (``SETTINGS``):
``--resume`` takes them from it, so only ``--steps`` need be given again; a setting given
again with another value is refused, naming both values.
On CUDA it uses bf16 autocast, TF32 matmuls, fused AdamW and, with ``--compile``,
``torch.compile``; on CPU a tiny model. The loop never waits for the GPU between log lines:
losses stay on the device and are read (one sync) every ``--log-every`` steps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import streamtok
from streamtok.attention import doc_to, document_attention


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    seq_len: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x: torch.Tensor, doc=None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if doc is None:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # --documents: attention stays inside each document
            att = document_attention(q, k, v, doc)
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied input and output embeddings
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, doc=None) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device) if doc is None else doc.position_ids
        x = self.tok(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x, doc)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# Settings a checkpoint is made with and a resume must keep: the model's shape and what the
# data loader's state is valid for. Their defaults; on the command line they default to None,
# so a resume can tell a value given again from one left out.
SETTINGS = {
    "batch_size": 16, "seq_len": 64, "n_layer": 2, "n_head": 4, "n_embd": 128, "seed": 0,
    "documents": "stream", "mix": None, "anneal": None,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["data/shards"], help="shard directory, glob or files (train and val splits)")
    p.add_argument("--out", default="runs/shakespeare", help="checkpoint and log directory")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/ckpt.pt if it exists, with the model and data settings it was made with")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, help="default 16")
    p.add_argument("--seq-len", type=int, help="default 64")
    p.add_argument("--n-layer", type=int, help="default 2")
    p.add_argument("--n-head", type=int, help="default 4")
    p.add_argument("--n-embd", type=int, help="default 128")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10, help="read the losses from the device this often")
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--log-batches", help="append 'step sha1' of every batch to this file (syncs every step: for tests)")
    p.add_argument("--mix", help="a mixture of DATA's subdirectories: name=weight,... (web=0.7,code=0.3)")
    p.add_argument("--anneal", help="with --mix, weights from a step on: STEP:name=weight,...")
    p.add_argument("--documents", choices=["stream", "mask", "bos", "pack"],
                   help="rows and attention by document (default stream; see streamtok.attention)")
    return p.parse_args(argv)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve_settings(args: argparse.Namespace, saved: dict | None, ckpt_path: str) -> None:
    """Fill ``args``' SETTINGS: from the checkpoint when resuming, else the defaults.

    Args:
        args: the parsed command line; settings left out are None.
        saved: the checkpoint's settings (``None``: a new run).
        ckpt_path: the checkpoint's path, for the error message.

    Raises:
        SystemExit: (status 2) a setting given on the command line disagrees with the checkpoint's.
    """
    for name, default in SETTINGS.items():
        given = getattr(args, name)
        if saved is None:
            setattr(args, name, default if given is None else given)
        elif given is not None and given != saved[name]:
            print(
                f"train_gpt.py: error: {flag(name)} {given} disagrees with {ckpt_path}, made with "
                f"{flag(name)} {saved[name]}; leave {flag(name)} out to resume with the checkpoint's value, "
                f"or give another --out to start a new run", file=sys.stderr,
            )
            raise SystemExit(2)
        else:
            setattr(args, name, saved[name])


def saved_settings(ckpt: dict) -> dict:
    """The settings a checkpoint was made with; older checkpoints only held the model's shape."""
    if "settings" in ckpt:
        return ckpt["settings"]
    return {**SETTINGS, **{k: v for k, v in ckpt["config"].items() if k in SETTINGS}}


def resume_command(args: argparse.Namespace, steps: int) -> str:
    """The shell command that continues this run to ``steps``, with this interpreter.

    The checkpoint holds every setting; the ones that choose the data are repeated so that
    the command says what it trains on (they must agree with the checkpoint's anyway).
    """
    script = os.path.abspath(__file__)
    if script.startswith(os.getcwd() + os.sep):
        script = os.path.relpath(script)
    data = [arg for name in ("mix", "anneal", "documents") if getattr(args, name) not in (None, SETTINGS[name])
            for arg in (flag(name), str(getattr(args, name)))]
    return shlex.join([sys.executable, script, "--data", *args.data, "--out", args.out, *data,
                       "--resume", "--steps", str(steps)])


def monitor_command() -> str:
    """How to start ``streamtok-monitor`` from any shell: the script this interpreter's install made.

    The README's first command installs into ``.venv`` without activating it, so the bare
    name is not on the PATH there; the console script in this interpreter's scripts
    directory (``.venv/bin``) is.
    """
    script = os.path.join(sysconfig.get_path("scripts"), "streamtok-monitor")
    return shlex.quote(script) if os.path.exists(script) else "streamtok-monitor"


def mixture(args: argparse.Namespace) -> tuple[dict, object]:
    """``({name: directory}, weights or schedule)`` from ``--mix`` and ``--anneal``."""
    table = lambda text: {k: float(v) for k, v in (item.split("=") for item in text.split(","))}  # noqa: E731
    weights = table(args.mix)
    sources = {name: os.path.join(args.data[0], name) for name in weights}
    if not args.anneal:
        return sources, weights
    step, rest = args.anneal.split(":", 1)
    return sources, [(0, weights), (int(step), table(rest))]


def save_checkpoint(path: str, payload: dict) -> None:
    """torch.save to a temporary name, fsync, rename: a crash never leaves a half checkpoint."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def lr_at(step: int, args: argparse.Namespace) -> float:
    warmup = max(1, args.steps // 20)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, args.steps - warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def evaluate(model: nn.Module, val: streamtok.CUDAPrefetcher, n_batches: int, autocast) -> float:
    model.eval()
    total, n = None, 0
    for i, (x, y) in enumerate(val):
        if i == n_batches:
            break
        with autocast():
            loss = model(x, y).float()
        total, n = (loss if total is None else total + loss), n + 1  # stays on the device
    model.train()
    return 0.0 if total is None else (total / n).item()  # one sync per evaluation


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for what runs outside autocast
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    ckpt = None
    if args.resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
    resolve_settings(args, None if ckpt is None else saved_settings(ckpt), ckpt_path)
    torch.manual_seed(args.seed)

    source = args.data[0] if len(args.data) == 1 else args.data
    mix: dict = {}
    if args.mix:  # each row is one source's window; the counts per source are in the state
        source, mix["weights"] = mixture(args)
    train_loader = streamtok.loader(
        source, seq_len=args.seq_len, batch_size=args.batch_size, split="train", mode="shuffle",
        seed=args.seed, epochs=None, num_workers=args.num_workers, pin_memory=cuda, documents=args.documents, **mix,
    )
    val_mix: dict = {}
    if args.mix:  # every evaluation reads the same batches: a finite pass, the first weights throughout
        weights = mix["weights"] if isinstance(mix["weights"], dict) else mix["weights"][0][1]
        val_mix = {"weights": weights, "primary": next(iter(weights)), "epochs": 1}
    val_loader = streamtok.loader(
        source, seq_len=args.seq_len, batch_size=args.batch_size, split="val", mode="sequential", **val_mix,
    )
    train = streamtok.CUDAPrefetcher(train_loader, device=device, depth=2)  # carries doc too
    val = streamtok.CUDAPrefetcher(val_loader, device=device, depth=2)

    cfg = GPTConfig(seq_len=args.seq_len, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(cfg).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95), fused=cuda or None)
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optim"])
        train.load_state_dict(ckpt["loader"])
        step = ckpt["step"]
        print(f"resumed from {ckpt_path} at step {step}, with its settings "
              + " ".join(f"{flag(n)} {getattr(args, n)}" for n in SETTINGS if getattr(args, n) is not None))
    fwd = torch.compile(model) if args.compile and cuda else model

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.1f}M parameters on {device}; config {asdict(cfg)}")
    print(f"data: {len(train_loader.collator.reader.paths)} train shards, "
          f"{train_loader.collator.reader.n_tokens:,} tokens; watch live with: {monitor_command()}")
    log = open(os.path.join(args.out, "log.jsonl"), "a")
    batch_log = open(args.log_batches, "a") if args.log_batches else None
    t0, tokens_seen = time.perf_counter(), 0
    pending: list[tuple[int, torch.Tensor]] = []  # (step, loss still on the device)

    def write_log(val_loss: float | None) -> float:
        """Read the pending losses (one device sync), log them; the last step's loss."""
        values = torch.stack([loss for _, loss in pending]).tolist()
        for (s, _), value in zip(pending, values):
            record = {"step": s, "loss": round(value, 6)}
            if val_loss is not None and s == step:
                record["val_loss"] = round(val_loss, 6)
            log.write(json.dumps(record) + "\n")
        log.flush()
        pending.clear()
        return values[-1]

    batches = iter(train)
    while step < args.steps:
        x, y, *doc = next(batches)
        x, y, doc = x.to(device), y.to(device), doc_to(doc[0], device) if doc else None
        if batch_log:
            h = hashlib.sha1(x.cpu().numpy().tobytes()).hexdigest()
            batch_log.write(f"{step} {h}\n")
            batch_log.flush()
        for group in optim.param_groups:
            group["lr"] = lr_at(step, args)
        with autocast():
            loss = fwd(x, y, doc)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        step += 1
        tokens_seen += x.numel()
        pending.append((step, loss.detach()))
        evaluating = step % args.eval_every == 0 or step == args.steps
        checkpointing = step % args.ckpt_every == 0 or step == args.steps
        if step % args.log_every == 0 or evaluating or checkpointing:  # the log is complete at a checkpoint
            val_loss = evaluate(fwd, val, args.eval_batches, autocast) if evaluating else None
            last = write_log(val_loss)
            rate = tokens_seen / (time.perf_counter() - t0)
            extra = f" | val {val_loss:.3f}" if val_loss is not None else ""
            if args.mix:  # windows per source so far, as of the batch just trained on
                extra += " | " + str({n: s["windows"] for n, s in train.state_dict()["sampler"]["sources"].items()})
            print(f"step {step:5d} | loss {last:.3f}{extra} | {rate:,.0f} tok/s", flush=True)
        if checkpointing:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optim": optim.state_dict(),
                "loader": train.state_dict(), "step": step, "config": asdict(cfg),
                "settings": {name: getattr(args, name) for name in SETTINGS},
            })
    log.close()
    if batch_log:
        batch_log.close()
    print(f"checkpoint: {ckpt_path} (step {step})")
    print(f"resume:     {resume_command(args, 2 * args.steps)}")
    print(f"monitor:    {monitor_command()}   # in another terminal while training runs (--wait: started before it)")


if __name__ == "__main__":
    main()
