"""The core engine must not import slicer, qt, ctk or vtk (directly or through anything it imports)."""

import ast
import pathlib
import subprocess
import sys

import HybridAttentionSegLib.core as core

FORBIDDEN = ("slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt")
CORE_DIR = pathlib.Path(core.__file__).parent


def _imported_roots(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_forbidden_import_statement_in_core():
    offenders = {
        str(path.relative_to(CORE_DIR)): sorted(_imported_roots(path) & set(FORBIDDEN))
        for path in CORE_DIR.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"core modules import forbidden packages: {offenders}"


def test_importing_every_core_module_loads_no_forbidden_package():
    modules = sorted(
        "HybridAttentionSegLib.core." + ".".join(p.relative_to(CORE_DIR).with_suffix("").parts)
        for p in CORE_DIR.rglob("*.py") if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
