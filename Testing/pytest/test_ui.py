"""Structure of the Slicer module outside Slicer: the .ui, its binding to the parameter node, the packaging.

The Qt widget itself only runs inside Slicer (PythonQt/CTK do not exist on PyPI), so these tests read
the files: the .ui parses; every ``self.ui.X`` the widget code uses exists with the expected class; every
parameter-node field is bound through ``SlicerParameterName`` to a widget whose class Slicer's GUI
connectors accept for the field's type; CMake lists every Lib file; requirements have floors, not pins.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "HybridAttentionSeg"
UI_PATH = MODULE_DIR / "Resources" / "UI" / "HybridAttentionSeg.ui"
MODULE_PATH = MODULE_DIR / "HybridAttentionSeg.py"
PARAMETERS_PATH = MODULE_DIR / "HybridAttentionSegLib" / "parameters.py"

#: every widget the module code may touch, with its class (a new ``self.ui.X`` must be declared here)
EXPECTED_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "outputsCollapsibleButton": "ctkCollapsibleButton",
    "inputVolumeSelector": "qMRMLNodeComboBox",
    "modelComboBox": "ctkComboBox",
    "refreshModelsButton": "QToolButton",
    "deviceComboBox": "ctkComboBox",
    "modelCardBrowser": "QTextBrowser",
    "outputSegmentationSelector": "qMRMLNodeComboBox",
    "keepProbabilitiesCheckBox": "QCheckBox",
    "attentionMethodComboBox": "ctkComboBox",
    "targetClassComboBox": "ctkComboBox",
    "attentionOpacitySliderWidget": "ctkSliderWidget",
    "attentionThresholdSliderWidget": "ctkSliderWidget",
    "colorMapComboBox": "QComboBox",
    "showLegendCheckBox": "QCheckBox",
    "applyButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
}
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QComboBox", "QProgressBar",
              "QTextBrowser"}


@pytest.fixture(scope="module")
def ui():
    tree = ET.parse(UI_PATH)  # raises if the XML is malformed
    root = tree.getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    return root, widgets


def _property(widget, name):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return prop
    return None


def _ui_references(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def _parameter_fields() -> dict[str, str]:
    """field name -> annotation source of ``HybridAttentionSegParameterNode``."""
    tree = ast.parse(PARAMETERS_PATH.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "HybridAttentionSegParameterNode":
            decorators = [ast.unparse(d) for d in node.decorator_list]
            assert "parameterNodeWrapper" in decorators
            return {item.target.id: ast.unparse(item.annotation) for item in node.body
                    if isinstance(item, ast.AnnAssign)}
    pytest.fail("HybridAttentionSegParameterNode not found")


def test_ui_parses_with_a_qmrmlwidget_root_and_unique_names(ui):
    root, widgets = ui
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "HybridAttentionSeg"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique (childWidgetVariables)"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert used - QT_CLASSES <= declared, f"undeclared custom widgets: {used - QT_CLASSES - declared}"
    for connection in root.iter("connection"):
        assert connection.findtext("sender") in widgets and connection.findtext("receiver") in widgets


def test_every_widget_the_code_uses_exists_with_the_expected_class(ui):
    _, widgets = ui
    referenced = _ui_references(MODULE_PATH)
    assert referenced, "the widget code must use self.ui"
    undeclared = referenced - set(EXPECTED_WIDGETS)
    assert not undeclared, f"declare these widgets in EXPECTED_WIDGETS: {sorted(undeclared)}"
    for name in referenced:
        assert name in widgets, f"self.ui.{name} is not in {UI_PATH.name}"
        assert widgets[name].get("class") == EXPECTED_WIDGETS[name], name


def test_every_parameter_is_bound_to_a_widget_slicer_can_connect(ui):
    _, widgets = ui
    bound = {}
    for name, widget in widgets.items():
        prop = _property(widget, "SlicerParameterName")
        if prop is not None:
            assert prop.get("stdset") == "0", f"{name}: SlicerParameterName must be a dynamic property"
            bound[prop.findtext("string")] = widget
    fields = _parameter_fields()
    assert set(bound) == set(fields), (f"unbound fields: {sorted(set(fields) - set(bound))}; "
                                       f"bindings to no field: {sorted(set(bound) - set(fields))}")
    for field, annotation in fields.items():
        widget = bound[field]
        cls = widget.get("class")
        if annotation.startswith("slicer.vtkMRML"):
            assert cls == "qMRMLNodeComboBox", field
            node_types = [s.text for s in _property(widget, "nodeTypes").iter("string")]
            assert node_types == [annotation.split(".", 1)[1]], field
        elif annotation == "bool":
            assert cls == "QCheckBox", field
        elif re.fullmatch(r"Annotated\[float, WithinRange\(.*\)\]", annotation):
            assert cls == "ctkSliderWidget", field  # Slicer's float connector needs a bounded range
        elif re.fullmatch(r"Annotated\[str, Choice\(.*\)\]", annotation):
            assert cls == "QComboBox", field  # Slicer's static-choice connector
        elif re.fullmatch(r"Annotated\[str, CatalogChoice\(.*\)\]", annotation):
            assert cls == "ctkComboBox", field  # the module's catalog connector (item data = value)
        else:
            pytest.fail(f"no GUI connector rule for {field}: {annotation}")


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
    for name, forbidden in (("logic.py", {"qt", "ctk", "slicer.ScriptedLoadableModule"}),
                            ("mrml_outputs.py", {"qt", "ctk", "slicer.ScriptedLoadableModule"}),
                            ("worker.py", {"qt", "ctk", "slicer", "vtk"}),
                            ("worker_client.py", {"qt", "ctk", "slicer", "vtk"})):
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
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    assert "slicer_add_python_unittest(SCRIPT" in testing
    top = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS", "EXTENSION_CONTRIBUTORS"):
        assert f"set({key} " in top, key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top and "add_subdirectory(HybridAttentionSeg)" in top
    entry = json.loads((ROOT / "Resources" / "HybridAttentionSeg.json").read_text())
    assert entry["build_dependencies"] == ["PyTorch"] and entry["scmurl"].startswith("https://")
    assert {"category", "scmrevision", "$schema"} <= set(entry)


def test_requirements_have_floors_not_pins():
    from HybridAttentionSegLib.install import readRequirements, requirementName

    requirements = readRequirements()
    names = {requirementName(r).lower() for r in requirements}
    assert {"torch", "monai", "safetensors", "pynrrd", "jsonschema"} <= names
    assert "simpleitk" not in names, "SimpleITK is bundled with Slicer"
    for requirement in requirements:
        assert ">=" in requirement and "==" not in requirement, requirement


# --- what the panel shows (pure helpers on the worker's ``info`` answer) ------------------------------------
ENVIRONMENT = {
    "catalog": [
        {"id": "b-model", "title": "B <b>bold</b>", "bundled": False, "natural_method": "rollout",
         "attention_methods": ["rollout", "segment-attention", "grad-cam", "uncertainty"],
         "architecture": {"name": "unetr"}, "labels": [{"value": 1, "name": "Liver", "color": [1, 0, 0]}],
         "license": "CC-BY-4.0", "intended_use": "research",
         "metrics": [{"name": "Dice", "label": "Liver", "value": 0.9512, "source": "held-out slab"}]},
        {"id": "a-model", "title": "A", "bundled": True, "natural_method": "gates",
         "attention_methods": ["gates", "grad-cam", "uncertainty"], "labels": []},
    ],
    "devices": [{"id": "cpu", "name": "CPU", "memory_gb": None},
                {"id": "cuda:0", "name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.1}],
}


def test_panel_choices_show_gpu_names_memory_and_natural_methods():
    from HybridAttentionSegLib import model_info

    assert model_info.modelChoices(ENVIRONMENT) == [("A (a-model)", "a-model"),
                                                   ("B <b>bold</b> (b-model)", "b-model")]
    assert model_info.deviceChoices(ENVIRONMENT) == [
        ("Auto (GPU 0: NVIDIA H100 80GB HBM3, 79.1 GiB)", "auto"),
        ("GPU 0: NVIDIA H100 80GB HBM3, 79.1 GiB", "cuda:0"), ("CPU", "cpu")]
    assert model_info.deviceChoices({"devices": [{"id": "cpu"}]}) == [("CPU only", "cpu")]
    card = model_info.cardByIdFrom(ENVIRONMENT, "b-model")
    assert model_info.attentionChoices(card)[0] == ("rollout (natural)", "rollout")
    assert model_info.classChoices(card) == [("Largest structure", ""), ("Liver", "Liver")]
    html = model_info.modelCardHtml(card)
    assert "B &lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html  # card text is escaped
    assert "Dice (Liver): 0.951" in html and "CC-BY-4.0" in html
    assert "No model selected" in model_info.modelCardHtml(None)


def test_dependency_check_reads_metadata_without_importing():
    import sys

    from HybridAttentionSegLib.install import DependencyInstaller, missingRequirements

    assert missingRequirements(["numpy>=1.0", "numpy>=999", "surely-not-installed-hybridseg>=1"]) == [
        "numpy>=999", "surely-not-installed-hybridseg>=1"]
    was_loaded = "torch" in sys.modules
    DependencyInstaller(requirements=["torch>=2.10", "monai>=1.6"]).missing()
    assert ("torch" in sys.modules) == was_loaded, "checking must not import torch into Slicer's process"
