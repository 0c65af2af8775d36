"""The README's "Training frameworks" snippets run as written, each in its own process."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from _util import ROOT, make_shards

README = ROOT / "README.md"


def _snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Training frameworks") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_one_snippet_per_framework():
    found = [next(m for m in ("accelerate", "lightning", "torchtitan") if f"streamtok.frameworks.{m}" in s) for s in _snippets()]
    assert found == ["accelerate", "lightning", "torchtitan"]


@pytest.mark.slow
@pytest.mark.parametrize("index, package", [(0, "accelerate"), (1, "lightning"), (2, "torchtitan")])
def test_snippet_runs(index, package, tmp_path):
    pytest.importorskip(package, reason=f"{package} is not installed (pip install -e '.[dev]')")
    make_shards(tmp_path / "data" / "shards", [6000, 3000, 2000], dtype=np.uint16)  # GPT-2 range ids
    (tmp_path / "snippet.py").write_text(_snippets()[index])
    done = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    if package == "torchtitan":
        assert done.stdout.startswith("{'streamtok': '{")
