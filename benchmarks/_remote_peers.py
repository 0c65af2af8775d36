"""MosaicML Streaming and LitData for bench_remote.py: write the same tokens with their own
writers, and read them back from the loopback S3 server over two epochs.

Run with an interpreter that has ``mosaicml-streaming==0.13.0`` and ``litdata==0.2.76``
(``pip install -e .[bench]``, or a separate venv: they pin numpy and transformers
versions that the rest of the environment may not want). Two adjustments, neither touching
an algorithm: ``streaming`` imports ``torchvision`` and ``transformers`` classes at import
time, which do not load beside a CPU ``torch==2.13.0`` here, so stand-in modules provide the
names its import needs (nothing in the token path uses them); LitData builds its own obstore
client options, so ``allow_http`` is added to them to reach a plain-http endpoint.

Usage (from bench_remote.py)::

    python _remote_peers.py write-mds SHARD_DIR OUT_DIR T
    python _remote_peers.py write-litdata SHARD_DIR OUT_DIR T
    python _remote_peers.py read-mds URL CACHE LIMIT B T WORKERS EPOCHS RESULT.json
    python _remote_peers.py read-litdata URL CACHE LIMIT B T WORKERS EPOCHS RESULT.json
"""

from __future__ import annotations

import glob
import json
import sys
import time
import types

import numpy as np


def _stand_ins() -> None:
    def stub(name: str, **attrs: object) -> None:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules.setdefault(name, mod)

    class _Dict(dict):
        pass

    stub("transformers")
    stub("transformers.feature_extraction_utils", BatchFeature=_Dict)
    stub("transformers.tokenization_utils_base", BatchEncoding=_Dict)
    stub("transformers.models")
    stub("transformers.models.auto")
    stub("transformers.models.auto.tokenization_auto", AutoTokenizer=object)
    stub("torchvision")
    stub("torchvision.datasets", VisionDataset=object)
    stub("torchvision.transforms")
    stub("torchvision.transforms.functional", to_tensor=lambda x: x)


def _shard_tokens(shard_dir: str) -> list[np.ndarray]:
    out = []
    for path in sorted(glob.glob(f"{shard_dir}/*.bin")):
        header = np.fromfile(path, dtype=np.int32, count=256)
        out.append(np.fromfile(path, dtype=np.uint16, offset=1024, count=int(header[2])))
    return out


def write_mds(shard_dir: str, out: str, seq_len: int) -> None:
    _stand_ins()
    from streaming import MDSWriter

    w = seq_len + 1
    with MDSWriter(out=out, columns={"tokens": "bytes"}, size_limit=1 << 19, compression=None) as writer:
        for tokens in _shard_tokens(shard_dir):
            for i in range(len(tokens) // w):
                writer.write({"tokens": tokens[i * w : (i + 1) * w].tobytes()})


def _litdata_fn(tokens):  # noqa: ANN001, ANN201
    import torch

    yield torch.from_numpy(tokens.astype(np.int64)).to(torch.uint16) if hasattr(torch, "uint16") else torch.from_numpy(tokens.astype(np.int32))


def write_litdata(shard_dir: str, out: str, seq_len: int) -> None:
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    optimize(fn=_litdata_fn, inputs=_shard_tokens(shard_dir), output_dir=out, chunk_bytes="2MB",
             item_loader=TokensLoader(), num_workers=1, mode="overwrite")


def _loop(batches_of_epoch, epochs: int, result_path: str, extra: dict, t0: float) -> None:  # noqa: ANN001
    first = None
    tokens = batches = 0
    for epoch in range(epochs):
        for batch in batches_of_epoch(epoch):
            if first is None:
                first = time.perf_counter() - t0
            tokens += int(np.prod(batch.shape))
            batches += 1
    wall = time.perf_counter() - t0
    with open(result_path, "w") as f:
        json.dump({"tokens": tokens, "batches": batches, "wall_s": wall, "first_batch_s": first, **extra}, f)


def read_mds(url: str, cache: str, limit: int, batch: int, seq_len: int, workers: int, epochs: int, result: str) -> None:
    t0 = time.perf_counter()
    _stand_ins()
    import torch
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()

    def collate(items):  # noqa: ANN001, ANN202
        return torch.from_numpy(np.stack([np.frombuffer(it["tokens"], dtype=np.uint16) for it in items]))

    ds = StreamingDataset(remote=url, local=cache, shuffle=True, shuffle_seed=0, batch_size=batch,
                          cache_limit=limit, num_canonical_nodes=1)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate,
                                     persistent_workers=False)
    _loop(lambda e: dl, epochs, result, {}, t0)


def read_litdata(url: str, cache: str, limit: int, batch: int, seq_len: int, workers: int, epochs: int, result: str) -> None:
    t0 = time.perf_counter()
    import litdata.streaming.downloader as downloader
    from litdata import StreamingDataLoader, StreamingDataset
    from litdata.streaming.item_loader import TokensLoader

    downloader._OBSTORE_CLIENT_OPTIONS = {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": "true"}
    ds = StreamingDataset(url, item_loader=TokensLoader(block_size=seq_len + 1), shuffle=True, seed=0,
                          cache_dir=cache, max_cache_size=limit)
    dl = StreamingDataLoader(ds, batch_size=batch, num_workers=workers)
    _loop(lambda e: dl, epochs, result, {}, t0)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "write-mds":
        write_mds(args[0], args[1], int(args[2]))
    elif cmd == "write-litdata":
        write_litdata(args[0], args[1], int(args[2]))
    else:
        url, cache, limit, b, t, workers, epochs, result = args
        fn = read_mds if cmd == "read-mds" else read_litdata
        fn(url, cache, int(limit), int(b), int(t), int(workers), int(epochs), result)
