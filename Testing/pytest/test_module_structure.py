"""Packaging of the Slicer module, read from the files: a thin module file without heavy imports, Logic and
worker without Qt, CMake lists every Lib file, developer reload covers every Slicer-side Lib module
(dependencies first), requirements have floors, not pins."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "HybridAttentionSeg"
MODULE_PATH = MODULE_DIR / "HybridAttentionSeg.py"
#: files whose ``self.ui.X`` references must exist in the .ui (the Qt-side panels the module widget creates)

def test_module_file_is_thin_and_free_of_heavy_imports():
    source = MODULE_PATH.read_text()
    assert len(source.splitlines()) < 400
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"torch", "monai", "numpy"}, "inference belongs in the worker process"
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"HybridAttentionSeg", "HybridAttentionSegWidget", "HybridAttentionSegLogic",
            "HybridAttentionSegTest"} <= classes
    assert "testLogic = False" not in source


def test_logic_and_worker_import_no_qt():
    lib = MODULE_DIR / "HybridAttentionSegLib"
    for name, forbidden in (("mrml/logic.py", {"qt", "ctk", "slicer.ScriptedLoadableModule"}),
                            ("mrml/catalog_logic.py", {"qt", "ctk", "slicer", "vtk", "torch"}),
                            ("mrml/correction.py", {"qt", "ctk", "slicer.ScriptedLoadableModule"}),
                            ("gui/model_info.py", {"qt", "ctk", "slicer", "vtk", "torch"}),
                            # the panel state is driven by pytest: only Slicer's optional translation function
                            ("gui/panel_state.py", {"qt", "ctk", "vtk", "torch", "slicer.util",
                                                    "slicer.ScriptedLoadableModule"}),
                            ("gui/parameter_binding.py", {"qt", "ctk", "slicer", "vtk", "torch"}),
                            ("mrml/sample_data.py", {"qt", "ctk", "vtk", "torch"}),  # torch-free: tested below
                            ("mrml/outputs.py", {"qt", "ctk", "slicer.ScriptedLoadableModule"}),
                            ("worker/server.py", {"qt", "ctk", "slicer", "vtk"}),
                            ("worker/client.py", {"qt", "ctk", "slicer", "vtk"})):
        tree = ast.parse((lib / name).read_text())
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}
        modules |= {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
        bad = {m for m in modules if m in forbidden or m.split(".")[0] in forbidden}
        assert not bad, f"{name} imports {bad}"


def test_cmake_lists_every_lib_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in cmake and "slicerMacroBuildScriptedModule" in cmake
    listed = set(re.findall(r"\$\{MODULE_NAME\}Lib/(\S+\.py)", cmake))
    lib = MODULE_DIR / "HybridAttentionSegLib"
    present = {p.relative_to(lib).as_posix() for p in lib.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(present - listed)
    assert not missing, "add to MODULE_PYTHON_SCRIPTS in HybridAttentionSeg/CMakeLists.txt:\n" + "\n".join(
        f"  ${{MODULE_NAME}}Lib/{m}" for m in missing)
    assert not listed - present, f"listed but missing: {sorted(listed - present)}"
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui",
                     "Resources/requirements.txt"):
        assert resource in cmake
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "HybridAttentionSeg")).is_file()
    # the extension metadata (top-level CMakeLists.txt, the catalog entry) is checked by test_extension_metadata.py


def test_developer_reload_covers_every_slicer_side_lib_module_dependencies_first():
    """``onReload`` re-imports the Slicer-side Lib modules; a module left out keeps running stale code."""
    tree = ast.parse(MODULE_PATH.read_text())
    method = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "onReload")
    loop = next(node for node in ast.walk(method) if isinstance(node, ast.For))
    order = [element.value for element in loop.iter.elts]
    lib = MODULE_DIR / "HybridAttentionSegLib"
    not_in_gui = {"mrml.headless", "mrml.demo", "mrml.demo_pictures", "worker.server", "worker.__main__"}
    slicerSide = {".".join(p.relative_to(lib).with_suffix("").parts) for folder in ("mrml", "gui", "worker")
                  for p in (lib / folder).glob("*.py") if p.name != "__init__.py"} - not_in_gui
    assert set(order) == slicerSide, f"reload list differs: missing {sorted(slicerSide - set(order))}"
    for position, name in enumerate(order):
        # module-level imports bind names at import time; imports inside functions always see the fresh module
        package = name.split(".")[0]
        body = [node for node in ast.parse((lib / f"{name.replace('.', '/')}.py").read_text()).body
                if isinstance(node, ast.ImportFrom) and node.level in (1, 2)]
        imported = set()
        for node in body:
            base = package if node.level == 1 else ""
            if node.module:
                imported.add(".".join(filter(None, (base, node.module))))
            else:
                imported |= {".".join(filter(None, (base, alias.name))) for alias in node.names}
        later = sorted((imported & set(order)) - set(order[:position]))
        assert not later, f"{name} imports {later}, which the reload list puts after it"


def test_requirements_have_floors_not_pins():
    from HybridAttentionSegLib.gui.install import readRequirements, requirementName

    requirements = readRequirements()
    names = {requirementName(r).lower() for r in requirements}
    assert {"torch", "monai", "safetensors", "pynrrd", "jsonschema"} <= names
    assert "simpleitk" not in names, "SimpleITK is bundled with Slicer"
    for requirement in requirements:
        assert ">=" in requirement and "==" not in requirement, requirement
