"""The house: stages bottom to top, wings beside them, each folder with its import rule; no circle.

Every ``import`` statement in ``streamtok/`` counts, including those inside functions and
``if TYPE_CHECKING:`` blocks: a stage that names a later one cannot be read without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "streamtok"

# Shared basics: they import only each other (no stage, no wing).
BASICS = {
    "errors", "_atomic", "_files", "_chain", "_lazy", "_order", "_position", "_background",
    "_formats", "_shardfile", "_vmread", "_digest", "_pagehints", "_sampling", "_help",
}
# The data path, bottom to top: a stage imports only the stages before it (and the basics).
STAGES = ["shards", "reader", "sampler", "collate", "dataloader", "prefetch"]
BELOW_DATALOADER = {"shards", "reader", "sampler", "collate"}
# What each module or folder may import besides the basics and itself. A folder's rule holds
# for every module in it; a module's own rule wins over its folder's.
RULES: dict[str, set[str]] = {
    # under the reader: object stores (and the .docidx format, which remote shards fetch)
    "storage": {"documents.sidecar"},
    "shards": {"storage"},
    "reader": {"shards", "storage"},
    "sampler": {"shards", "reader"},
    "collate": {"shards", "reader", "sampler"},
    # the DataLoader knows neither documents nor mixtures: a collator it is given does its part
    "_ring": {"collate"},
    "dataloader": {*BELOW_DATALOADER, "_ring", "metrics", "locate"},
    "_staging": {"collate"},
    "prefetch": {"_staging", "metrics"},
    "nodes": BELOW_DATALOADER,
    # the wings: documents and mixtures build on the stages up to the collator; a mixture may
    # hold documents, never the reverse; metrics need no stage and no torch (the monitor reads them)
    "documents": BELOW_DATALOADER | {"storage"},
    "documents.sidecar": set(),
    "mixture": BELOW_DATALOADER | {"documents", "storage"},
    "metrics": {"storage.urls"},
    "locate": BELOW_DATALOADER | {"documents", "mixture"},
    # for the trainer's side of documents (masks from a batch's doc): a leaf
    "attention": set(),
    # the one place that knows every stage and wing: streamtok.loader(...)
    "build": {*STAGES, "documents", "mixture", "locate", "storage"},
}
DATA_PATH = [*RULES, "streamtok"]
TOOLS = ("prep", "cli", "locate_cli", "bench", "frameworks")


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


def _rule(module: str) -> tuple[str, set[str]] | None:
    """The most specific rule for ``module``: its own, else its folder's."""
    name = _short(module)
    while name:
        if name in RULES:
            return name, RULES[name]
        name = name.rpartition(".")[0]
    return None


def _allowed(dep: str, own: str, allowed: set[str]) -> bool:
    name = _short(dep)
    if name in BASICS or name == own or name.startswith(own + "."):
        return True
    return any(name == a or name.startswith(a + ".") for a in allowed)


def _broken_rules() -> list[str]:
    wrong = []
    for mod, deps in _graph().items():
        if _short(mod) in BASICS:
            wrong += [f"{_short(mod)} imports {_short(d)}" for d in deps if _short(d) not in BASICS]
            continue
        rule = _rule(mod)
        if rule is None or mod == "streamtok":
            continue
        own, allowed = rule
        wrong += [f"{_short(mod)} imports {_short(d)}" for d in deps if not _allowed(d, own, allowed)]
    return sorted(wrong)


def test_every_module_imports_only_what_its_folder_rule_allows():
    wrong = _broken_rules()
    assert not wrong, "imports against the layer rules: " + "; ".join(wrong)


def test_every_module_of_the_data_path_has_a_rule():
    """A new module is placed on purpose: a rule of its own or of its folder, or it is a tool."""
    unplaced = [
        _short(m) for m in _graph()
        if m != "streamtok" and _short(m) not in BASICS and _rule(m) is None
        and not _short(m).startswith(TOOLS)
    ]
    assert not unplaced, f"modules with no import rule: {unplaced}"


def test_the_top_level_is_the_stages_and_the_wings():
    """``ls streamtok/``: the stages, their front doors, private basics, and one folder per wing."""
    public = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))
    assert public == sorted([*STAGES, "attention", "build", "cli", "errors", "locate", "locate_cli", "nodes"])
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == ["bench", "documents", "frameworks", "metrics", "mixture", "prep", "storage"]


def test_metrics_import_no_torch():
    wrong = [
        f"{_short(_module_name(p))} imports {t}"
        for p in (PACKAGE / "metrics").rglob("*.py")
        for t, _ in _imports(p)
        if t.split(".")[0] == "torch"
    ]
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
    assert "shards imports collate" in _broken_rules()


def test_the_rules_catch_a_wing_in_the_dataloader(tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "streamtok"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "dataloader.py").write_text((copy / "dataloader.py").read_text() + "\nfrom .documents.collate import DocumentCollator\n")
    (copy / "metrics" / "meter.py").write_text((copy / "metrics" / "meter.py").read_text() + "\nfrom ..reader import MemmapReader\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", copy)
    assert _broken_rules() == ["dataloader imports documents.collate", "metrics.meter imports reader"]
