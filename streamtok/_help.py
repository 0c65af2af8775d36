"""``--help`` as a terminal shows it: argparse's layout, wrapped at spaces only.

argparse wraps with :func:`textwrap.wrap`'s defaults, which cut a word longer than the column
(``streamtok:mode=random,workers=2,ou`` / ``t=compact``) and break at hyphens
(``karpathy/fineweb-`` / ``edu-100B-gpt2-token-shards``): a repo id, a file name or an option
value pasted from the help would be wrong. These formatters wrap at spaces alone; a word longer
than the column stays whole on its own line.
"""

from __future__ import annotations

import argparse
import textwrap

_WHOLE_WORDS = {"break_long_words": False, "break_on_hyphens": False}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's default formatter, never cutting a word or a hyphenated name."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, **_WHOLE_WORDS)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(self._whitespace_matcher.sub(" ", text).strip(), width, initial_indent=indent,
                             subsequent_indent=indent, **_WHOLE_WORDS)


class RawDescriptionHelpFormatter(HelpFormatter):
    """The description and epilog as written (line breaks kept); options wrapped at spaces only."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help never cuts words: argparse's stock formatters are swapped
    for :class:`HelpFormatter` / :class:`RawDescriptionHelpFormatter` (the default is the first)."""

    def __init__(self, *args: object, formatter_class: type = HelpFormatter, **kwargs: object) -> None:
        swap = {argparse.HelpFormatter: HelpFormatter, argparse.RawDescriptionHelpFormatter: RawDescriptionHelpFormatter}
        super().__init__(*args, formatter_class=swap.get(formatter_class, formatter_class), **kwargs)  # type: ignore[arg-type]
