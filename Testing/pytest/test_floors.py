"""The library's floors: imports point one way, no import circles, small files, a thin module shell.

Parses the source (no imports are executed), so it runs without slicer, qt or torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "HybridAttentionSeg" / "HybridAttentionSegLib"
SHELL = ROOT / "HybridAttentionSeg" / "HybridAttentionSeg.py"
#: the module shell: Module, Logic glue, a Widget that only binds the .ui, and the self-test's name
SHELL_MAX_LINES = 250

#: floor -> floors it must never import (the data flow is gui -> mrml -> worker -> core)
FORBIDDEN = {
    "core": {"gui", "mrml", "worker", "cli", "web"},
    "worker": {"gui", "mrml", "cli", "web"},
    "mrml": {"gui", "cli", "web"},
    "web": {"gui", "cli"},  # the review web app (hybridseg review) sits beside gui/, on mrml/
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in LIB.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(LIB).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Lib modules that ``name`` imports anywhere in its body (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, *([node.module] if node.module else [])])
            candidates = [f"{target}.{alias.name}".lstrip(".") for alias in node.names]
            submodules = [c for c in candidates if c in modules]
            found |= set(submodules) if submodules else {target}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            absolute = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {m.removeprefix("HybridAttentionSegLib.") for m in absolute
                      if m.startswith("HybridAttentionSegLib.")}
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_imports_point_one_way():
    bad = []
    for name, imported in _graph().items():
        floor = name.split(".")[0]
        for target in imported:
            if target.split(".")[0] in FORBIDDEN.get(floor, ()):
                bad.append(f"{name} -> {target}")
    assert not bad, "imports against the data flow:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            # a package's __init__ importing its own submodules is how packages work, not a circle
            if state.get(target) == "open" and not node.startswith(target + "."):
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_files_are_small_and_the_shell_thin():
    long = {str(p.relative_to(ROOT)): n for p in LIB.rglob("*.py")
            if "__pycache__" not in p.parts and (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"
    shell = len(SHELL.read_text().splitlines())
    assert shell <= SHELL_MAX_LINES, (f"{SHELL.name} has {shell} lines: keep it a thin binder "
                                      f"(<= {SHELL_MAX_LINES}); move helpers into gui/")


def test_floors_exist():
    for floor in ("core/models", "core/inference", "core/explain", "core/weights", "core/correction",
                  "core/training", "core/data", "mrml", "gui", "worker", "cli"):
        assert (LIB / floor / "__init__.py").is_file(), floor
