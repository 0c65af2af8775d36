"""The ``streamtok`` command: prepare data (tokenize, download, inspect) and benchmark the loader.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from ._help import ArgumentParser
from .errors import StreamtokError

SUBCOMMANDS = (
    "streamtok.prep.tokenize_cli",
    "streamtok.prep.hub",
    "streamtok.prep.inspect",
    "streamtok.bench.cli",
    "streamtok.locate_cli",
)


def plain(doc: str) -> str:
    """A docstring as ``--help`` text: Sphinx roles and double backquotes become plain words.

    Args:
        doc: reStructuredText such as ``:mod:`streamtok.bench.run```, ``:func:`~a.b```, ````x````.

    Returns:
        The same text with ``:role:`target``` as ``target`` (``~a.b`` as ``b``) and ````x```` as ``x``.
    """
    doc = re.sub(r":[a-z]+:`(~?)([^`]+)`", lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], doc)
    return doc.replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="streamtok", description=plain(__doc__.splitlines()[0]))
    # Every subcommand's parser is one too: its --help never cuts a word (see _help).
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StreamtokError as exc:
        print(f"streamtok {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `streamtok inspect ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the machine said no (disk full, permissions): one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"streamtok {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
