"""The data path reads bottom to top: no import circle, no stage importing a later stage.

Every ``import`` statement in ``streamtok/`` counts, including those inside functions and
``if TYPE_CHECKING:`` blocks: a stage that names a later one cannot be read without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamtok"
# The stages, bottom to top. A stage imports only stages before it in this list.
STAGES = ["_formats", "shards", "reader", "sampler", "collate", "loader", "prefetch"]
# Stages beside the chain, at a rank between two of its stages (documents: the index, above
# the formats; boundaries over a reader; bos/pack orders beside the sampler; the batch
# stages beside the collator).
BESIDE = {
    "documents": 1.5,
    "boundaries": 2.5,
    "packing": 3.3,
    "packed_rows": 3.6,
    "mixture": 4.5,
    "doc_batches": 4.5,
    "nodes": 4.5,
    "locate": 4.6,
}
HELPERS = {"_chain", "_order", "_position", "_schedule", "_pagehints", "_pagecache", "_ring", "_staging", "_background", "_atomic", "errors", "metrics"}
DATA_PATH = {*STAGES, *BESIDE, *HELPERS}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import in a file, relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if not node.module:  # from . import x: each name is a module
                found += [(f"{target}.{n}", []) for n in names]
            else:
                found.append((target, names))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        deps = set()
        for target, _ in _imports(path):
            while target and target not in modules:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target.startswith("streamtok") and target != "streamtok":
                deps.add(target)
        graph[_module_name(path)] = deps - {_module_name(path)}
    return graph


def _short(module: str) -> str:
    return module.removeprefix("streamtok.")


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                raise AssertionError("import circle: " + " -> ".join(map(_short, circle)))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_stage_imports_a_later_stage():
    rank = {f"streamtok.{m}": i for i, m in enumerate(STAGES)}
    rank |= {f"streamtok.{m}": r for m, r in BESIDE.items()}
    wrong = [
        f"{_short(mod)} imports {_short(dep)}"
        for mod, deps in _graph().items()
        for dep in deps
        if mod in rank and dep in rank and rank[dep] >= rank[mod]
    ]
    assert not wrong, "a stage imports a later stage: " + "; ".join(sorted(wrong))


def test_data_path_imports_no_tool():
    wrong = [
        f"{_short(mod)} imports {dep}"
        for mod, deps in _graph().items()
        if _short(mod) in DATA_PATH
        for dep in deps
        if dep.startswith(("streamtok.prep", "streamtok.cli", "streamtok.bench", "streamtok._bench"))
    ]
    for path in PACKAGE.glob("*.py"):
        if path.stem in DATA_PATH:
            wrong += [f"{path.stem} imports {t}" for t, _ in _imports(path) if t.split(".")[0] in ("monitor", "streamtok_monitor", "textual")]
    assert not wrong, "; ".join(wrong)


def test_no_private_name_imported_across_modules():
    wrong = [
        f"{_module_name(path)} imports {name} from {target}"
        for path in PACKAGE.rglob("*.py")
        for target, names in _imports(path)
        if target.startswith("streamtok")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not wrong, "; ".join(wrong)


def test_the_checks_see_a_planted_circle(tmp_path, monkeypatch):
    """The graph walker itself: an upward import planted in a copy is caught."""
    import shutil

    copy = tmp_path / "streamtok"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "shards.py").write_text((copy / "shards.py").read_text() + "\nfrom .collate import Collator\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", copy)
    try:
        test_no_import_circle()
    except AssertionError as exc:
        assert "shards" in str(exc)
    else:
        raise AssertionError("the planted circle was not found")
    try:
        test_no_stage_imports_a_later_stage()
    except AssertionError as exc:
        assert "shards imports collate" in str(exc)
    else:
        raise AssertionError("the planted upward import was not found")
