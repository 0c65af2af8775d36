"""Every ``streamtok SUBCOMMAND --help`` and ``streamtok-monitor --help``: plain text, no word cut.

argparse's own wrapping cut ``streamtok bench --help``'s contestant example mid-word and
``streamtok download --help``'s repo id at a hyphen; the monitor's description showed
reStructuredText's double backquotes and ``tokenize``'s a Markdown code span. A reader pastes
names and values from these texts, so each word of every option's help and of the description
must come out whole, at the 80 columns of a default terminal and at a narrow 50.
"""

from __future__ import annotations

import argparse
import re

import pytest

from streamtok._help import HelpFormatter
from streamtok.cli import build_parser, plain

SUBCOMMANDS = ["tokenize", "download", "inspect", "bench", "locate"]
MARKUP = re.compile(r"``|`[^`\s]+`|:[a-z]+:`|(?<![\w*/])\*[A-Za-z][\w ]*\*(?![\w*])")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from streamtok_monitor.cli import _parser

    top = build_parser()
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return {"streamtok": top, **{f"streamtok {n}": sub.choices[n] for n in SUBCOMMANDS}, "streamtok-monitor": _parser()}


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """Every word the help must show whole: the description's and each option's (defaults filled in)."""
    formatter = parser._get_formatter()
    texts = [plain(parser.description or "")]
    texts += [formatter._expand_help(a) for a in parser._actions if a.help and a.help is not argparse.SUPPRESS]
    return [w for text in texts for w in text.split()]


def test_every_command_has_its_help():
    assert set(_parsers()) == {"streamtok", "streamtok-monitor", *(f"streamtok {n}" for n in SUBCOMMANDS)}


@pytest.mark.parametrize("columns", [80, 50])
@pytest.mark.parametrize("name", ["streamtok", *(f"streamtok {n}" for n in SUBCOMMANDS), "streamtok-monitor"])
def test_help_is_plain_text_with_every_word_whole(name, columns, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    parser = _parsers()[name]
    text = parser.format_help()
    assert not MARKUP.findall(text), (name, MARKUP.findall(text))
    shown = set(text.split())
    cut = [w for w in _words(parser) if w not in shown]
    assert not cut, f"{name} --help at {columns} columns cuts: {cut}"
    bare = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert not bare, f"{name}: options without help: {bare}"


def test_the_formatter_wraps_at_spaces_only(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter)
    p.add_argument("--repo", help="default karpathy/fineweb-edu-100B-gpt2-token-shards, or mode=random,workers=2,out=compact")
    text = p.format_help()
    assert "karpathy/fineweb-edu-100B-gpt2-token-shards," in text.split() and "mode=random,workers=2,out=compact" in text.split()
    assert max(len(line) for line in text.splitlines() if " " in line.strip()) <= 40


# Options the README names that belong to other programs: sbatch, pip, torchrun, the aws CLI.
FOREIGN = {"--array", "--cpus-per-task", "--job-name", "--wait", "--no-deps", "--nproc_per_node", "--recursive"}


def test_every_option_the_readme_names_is_defined_somewhere():
    """A renamed or removed option leaves the README stale: each ``--name`` it shows must be an
    ``add_argument("--name"`` of streamtok, the monitor, an example, a benchmark or docs script."""
    from _util import ROOT

    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", (ROOT / "README.md").read_text()))
    sources = [p for d in ("streamtok", "monitor", "examples", "benchmarks", "docs") for p in (ROOT / d).rglob("*.py")]
    defined = set()
    for path in sources:
        defined |= set(re.findall(r"""add_argument\(\s*(?:"-\w",\s*)?["'](--[a-z][a-z0-9_-]*)["']""", path.read_text()))
    missing = sorted(named - defined - FOREIGN)
    assert not missing, f"README.md names options no program defines: {missing}"
    assert "--shard-tokens" in defined and "--no-follow" in defined and "--mix" in defined  # the scan finds them
