"""``streamtok locate CHECKPOINT_OR_STATE --step N``: the rows of any batch of a run, by name.

A loader made by ``streamtok.loader(...)`` saves its settings in its state (``"origin"``);
this command rebuilds that loader (no workers, no metrics) for the asked rank, loads the
state (the fingerprint proves the data is the same) and prints, per row of the rank's batch
number ``N`` of the run, its source, shard, offset and document, and with ``--text`` the
row decoded by the tokenizer that the shard's ``streamtok tokenize`` manifest names.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Iterator
from typing import Any

from .documents.boundary import MANIFEST
from .errors import ConfigError, StateMismatchError
from .locate import ORIGIN_KEYS

_MAX_STATE_BYTES = 64 << 20
_INTS = ("seq_len", "batch_size", "holdout", "seed", "epochs", "bos_id", "block_docs")
_STRINGS = ("split", "mode", "documents", "primary", "raw_dtype")


def register(sub: Any) -> None:
    p = sub.add_parser("locate", help="name the rows of batch N of a run from its checkpoint or state",
                       description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("state", metavar="CHECKPOINT_OR_STATE", help="a loader state (.json) or a torch checkpoint holding one")
    p.add_argument("--step", type=int, required=True, metavar="N", help="this rank's batch number from the start of the run, 0-based")
    p.add_argument("--rank", type=int, default=0, metavar="R", help="data-parallel rank (default 0; the world size is the state's)")
    p.add_argument("--key", metavar="A.B", help="where the loader state sits in the checkpoint, when it holds several")
    p.add_argument("--text", action="store_true", help="decode each row with the tokenizer of the shard's tokenize manifest")
    p.add_argument("--chars", type=int, default=300, metavar="C", help="with --text, print at most C characters a row (default 300)")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state = _loader_state(_load(args.state), args.key, args.state)
    built = rebuild(state, rank=args.rank, where=args.state)
    rows = built.locate(args.step)
    texts = _texts(built, args.step, rows) if args.text else [None] * len(rows)
    sampler = state["sampler"]
    if not args.json:
        print(f"step {args.step}, rank {args.rank} of {sampler['world_size']}: {len(rows)} rows")
    for i, (row, text) in enumerate(zip(rows, texts)):
        if args.json:
            record = {"row": i, **dict(row)}
            if args.text:
                record["text"] = text
            print(json.dumps(record))
            continue
        source = "" if row.source is None else f"{row.source}  "
        document = "-" if row.document is None else str(row.document)
        print(f"{i:4d}  {source}{row.shard}  offset {row.offset}  document {document}")
        if text is not None:
            print(f"      {text[: args.chars]!r}")
    return 0


def rebuild(state: dict[str, Any], *, rank: int, where: str) -> Any:
    """The loader a state was saved from, for ``rank`` of the state's world size, with the state loaded."""
    import streamtok

    origin = state.get("origin")
    if origin is None:
        raise ConfigError(
            f"{where}: the loader state has no 'origin' (the settings it was built with): it was "
            "saved by a loader not made by streamtok.loader(...), or by streamtok before 0.2"
        )
    settings = _checked_origin(origin, where)
    sampler = state.get("sampler")
    world = sampler.get("world_size") if isinstance(sampler, dict) else None
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise StateMismatchError(f"{where}: sampler.world_size is {world!r}, not a positive integer")
    if isinstance(rank, bool) or not 0 <= rank < world:
        raise ConfigError(f"--rank {rank} is not a rank of world size {world} (0..{world - 1})")
    source = settings.pop("source")
    built = streamtok.loader(source, **settings, rank=rank, world_size=world, num_workers=0, metrics=False)
    built.load_state_dict(state)
    return built


def _checked_origin(origin: Any, where: str) -> dict[str, Any]:
    """The origin's settings as loader() keywords, each key and type checked (a state is not trusted)."""
    if not isinstance(origin, dict):
        raise StateMismatchError(f"{where}: 'origin' is {type(origin).__name__}, not a mapping")
    unknown = sorted(set(origin) - {"source", *ORIGIN_KEYS})
    if unknown or "source" not in origin:
        raise StateMismatchError(f"{where}: 'origin' has unknown keys {unknown} or no 'source'")
    out: dict[str, Any] = {"source": _checked_source(origin["source"], where)}
    for key, value in origin.items():
        if key == "bos_id" and isinstance(value, dict):  # a mixture's {name: bos_id}
            if not all(isinstance(k, str) and (v is None or (isinstance(v, int) and not isinstance(v, bool))) for k, v in value.items()):
                raise StateMismatchError(f"{where}: origin.bos_id is {value!r}, not an integer or {{name: integer or null}}")
        elif key in _INTS:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise StateMismatchError(f"{where}: origin.{key} is {value!r}, not an integer")
        elif key in _STRINGS:
            if value is not None and not isinstance(value, str):
                raise StateMismatchError(f"{where}: origin.{key} is {value!r}, not a string")
        elif key == "weights":
            _checked_weights(value, where)
        elif key == "max_epochs" and not (
            isinstance(value, dict)
            and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in value.items())
        ):
            raise StateMismatchError(f"{where}: origin.max_epochs is {value!r}, not {{name: number}}")
        if key != "source" and not (key in ("block_docs", "raw_dtype") and value is None):
            out[key] = value
    if isinstance(out.get("weights"), list):
        out["weights"] = [(step, table) for step, table in out["weights"]]
    return out


def _checked_source(source: Any, where: str) -> Any:
    def one(path: Any) -> str:
        if not isinstance(path, str) or not path:
            raise StateMismatchError(f"{where}: origin.source holds {path!r}, not a path or URL")
        return path

    if isinstance(source, dict):
        return {one(name): _checked_source(src, where) for name, src in source.items()}
    if isinstance(source, list):
        return [one(p) for p in source]
    return one(source)


def _checked_weights(weights: Any, where: str) -> None:
    def table(t: Any) -> None:
        if not isinstance(t, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in t.items()):
            raise StateMismatchError(f"{where}: origin.weights holds {t!r}, not {{name: number}}")

    if weights is None:
        return
    if isinstance(weights, dict):
        table(weights)
        return
    if not isinstance(weights, list):
        raise StateMismatchError(f"{where}: origin.weights is {weights!r}, not a mapping or a schedule")
    for item in weights:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and not isinstance(item[0], bool)):
            raise StateMismatchError(f"{where}: origin.weights entry {item!r} is not [step, {{name: weight}}]")
        table(item[1])


def _load(path: str) -> Any:
    """A JSON state or a torch checkpoint (loaded with ``weights_only=True``: no code runs)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
        raise ConfigError(f"{path}: not a regular file")
    size = st.st_size
    if size > _MAX_STATE_BYTES and path.endswith(".json"):
        raise ConfigError(f"{path}: {size} bytes is too large for a loader state")
    with open(path, "rb") as f:
        head = f.read(1)
    if head in (b"{", b"["):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise ConfigError(f"{path}: neither a JSON state nor a torch checkpoint ({type(exc).__name__}: {exc})") from None


def _loader_state(obj: Any, key: str | None, where: str) -> dict[str, Any]:
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                raise ConfigError(f"{where}: no key {part!r} on the way to --key {key}")
            obj = obj[part]
        if not _is_state(obj):
            raise ConfigError(f"{where}: --key {key} is not a streamtok loader state")
        return obj
    found = list(_states(obj, ""))
    if not found:
        raise ConfigError(f"{where}: holds no streamtok loader state (a dict with 'streamtok' and 'sampler')")
    if len(found) > 1:
        raise ConfigError(f"{where}: holds {len(found)} loader states ({', '.join(p or '<top>' for p, _ in found)}); pick one with --key")
    return found[0][1]


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and "streamtok" in obj and "sampler" in obj


def _states(obj: Any, path: str, depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    if _is_state(obj):
        yield path, obj
    elif isinstance(obj, dict) and depth < 4:
        for k, v in obj.items():
            if isinstance(k, str):
                yield from _states(v, f"{path}.{k}" if path else k, depth + 1)


def _texts(built: Any, step: int, rows: list[Any]) -> list[str]:
    from ._formats import probe_shard
    from .documents.boundary import tokenize_record
    from .locate import step_input

    tokens = built.collator.gather(step_input(built.collator, step)).numpy()
    raw_dtype = (built.origin or {}).get("raw_dtype") or "uint16"
    records: dict[str, Any] = {}  # by shard
    decoders: dict[str, Any] = {}  # by manifest: one tokenizer loaded per manifest
    manifests: dict[str, Any] = {}
    out = []
    for i, row in enumerate(rows):
        if row.shard not in records:
            # The reader the loader takes its boundary token from: the manifest is checked against the shard.
            records[row.shard] = record = tokenize_record(probe_shard(row.shard, raw_dtype=raw_dtype), cache=manifests)
            if record is None:
                raise ConfigError(
                    f"--text: no streamtok tokenize manifest ({MANIFEST}) beside {row.shard} lists it; the tokenizer is not known"
                )
        record = records[row.shard]
        if record.manifest not in decoders:
            decoders[record.manifest] = _decoder(record)
        out.append(decoders[record.manifest](tokens[i].tolist()))
    return out


def _decoder(record: Any) -> Any:
    """A decode function for the tokenizer a checked tokenize manifest names (a :class:`TokenizeRecord`)."""
    if record.encoding is not None:
        from .prep.encoding import load_encoding

        enc = load_encoding(record.encoding)
        return lambda ids: enc.decode(ids, errors="replace")
    tokenizer = record.tokenizer
    if tokenizer is not None and isinstance(tokenizer.get("source"), str):
        from tokenizers import Tokenizer

        from .prep.hf_tokenizer import resolve_tokenizer

        found = resolve_tokenizer(tokenizer["source"])
        if found.sha256 != tokenizer.get("sha256"):
            raise ConfigError(f"--text: the tokenizer at {tokenizer['source']} is not the one {record.manifest} was made with (sha256 differs)")
        tok = Tokenizer.from_file(found.path)
        return lambda ids: tok.decode(ids, skip_special_tokens=False)
    raise ConfigError(f"--text: {record.manifest} names no tokenizer (neither 'encoding' nor 'tokenizer')")
