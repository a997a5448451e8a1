"""Structure of the Slicer module's user interface outside Slicer: the .ui and its binding to the parameter node.

The Qt widget itself only runs inside Slicer (PythonQt/CTK do not exist on PyPI), so these tests read
the files: the .ui parses; every ``self.ui.X`` the widget code (the Qt-side panels ``gui/main_panel.py``,
``gui/catalog_panel.py`` and ``gui/correction_panel.py``) uses exists with the expected class, in the expected section;
every parameter-node field is bound through ``SlicerParameterName`` to a widget whose class Slicer's GUI
connectors accept for the field's type. The pure helpers behind the panel (model card HTML) are tested on real
card files, and the widget's lifecycle rules are read from its source. Packaging: ``test_module_structure.py``;
sample data: ``test_sample_data.py``.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "HybridAttentionSeg"
UI_PATH = MODULE_DIR / "Resources" / "UI" / "HybridAttentionSeg.ui"
MODULE_PATH = MODULE_DIR / "HybridAttentionSeg.py"
PARAMETERS_PATH = MODULE_DIR / "HybridAttentionSegLib" / "gui" / "parameters.py"
#: files whose ``self.ui.X`` references must exist in the .ui (the Qt-side panels the module widget creates)
WIDGET_CODE = [MODULE_DIR / "HybridAttentionSegLib" / "gui" / name
               for name in ("main_panel.py", "catalog_panel.py", "correction_panel.py")]

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
    # model catalog (catalog_widget.py)
    "downloadButton": "QPushButton",
    "downloadProgressBar": "QProgressBar",
    "importModelButton": "QToolButton",
    # correct and review (correction_widget.py)
    "correctionCollapsibleButton": "ctkCollapsibleButton",
    "correctionSegmentationSelector": "qMRMLNodeComboBox",
    "correctionSegmentComboBox": "ctkComboBox",
    "segmentThresholdSliderWidget": "ctkSliderWidget",
    "clickMarkupsSelector": "qMRMLNodeComboBox",
    "clickPlaceWidget": "qSlicerMarkupsPlaceWidget",
    "clickLabelComboBox": "ctkComboBox",
    "autoApplyClicksCheckBox": "QCheckBox",
    "applyClicksButton": "QPushButton",
    "findRegionsButton": "QPushButton",
    "nextRegionButton": "QPushButton",
    "uncertainRegionsTableView": "qMRMLTableView",
    "undoButton": "QPushButton",
    "redoButton": "QPushButton",
    "segmentEditorButton": "QPushButton",
}
#: the collapsible section each group of new widgets must sit in
SECTIONS = {
    "inputsCollapsibleButton": ["modelComboBox", "downloadButton", "downloadProgressBar", "importModelButton"],
    "correctionCollapsibleButton": [name for name in EXPECTED_WIDGETS if name.startswith(
        ("correctionSegment", "segmentThreshold", "click", "autoApply", "applyClicks", "findRegions",
         "nextRegion", "uncertainRegions", "undo", "redo", "segmentEditor"))],
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


def _ui_references(*paths: Path) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
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
    for path in WIDGET_CODE:
        assert _ui_references(path), f"{path.name} must use self.ui"
    referenced = _ui_references(*WIDGET_CODE)
    undeclared = referenced - set(EXPECTED_WIDGETS)
    assert not undeclared, f"declare these widgets in EXPECTED_WIDGETS: {sorted(undeclared)}"
    for name in referenced:
        assert name in widgets, f"self.ui.{name} is not in {UI_PATH.name}"
        assert widgets[name].get("class") == EXPECTED_WIDGETS[name], name
    # every new widget is used by the code (a widget nobody binds is dead UI)
    assert set(EXPECTED_WIDGETS) - referenced <= {
        "inputVolumeSelector", "modelComboBox", "deviceComboBox", "outputSegmentationSelector",
        "keepProbabilitiesCheckBox", "attentionMethodComboBox", "targetClassComboBox",
        "attentionOpacitySliderWidget", "attentionThresholdSliderWidget", "colorMapComboBox", "showLegendCheckBox",
        "correctionSegmentationSelector", "clickMarkupsSelector", "autoApplyClicksCheckBox",
    }, "only widgets bound through SlicerParameterName may go unreferenced"


def test_new_sections_hold_their_widgets_and_mrml_widgets_get_the_scene(ui):
    root, widgets = ui
    for section, names in SECTIONS.items():
        inside = {w.get("name") for w in widgets[section].iter("widget")}
        missing = [name for name in names if name not in inside]
        assert not missing, f"{missing} must be inside {section}"
    assert len(SECTIONS["correctionCollapsibleButton"]) == 14
    correction = widgets["correctionCollapsibleButton"]
    assert _property(correction, "collapsed").findtext("bool") == "true"
    assert _property(correction, "text").findtext("string") == "Correct and review"
    # every MRML widget is given the scene by the top-level qMRMLWidget
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in widgets.items() if w.get("class") in (
        "qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget", "qMRMLTableView")}
    assert mrml <= receivers, f"connect mrmlSceneChanged -> setMRMLScene for {sorted(mrml - receivers)}"
    # the region table is read-only and unsorted: a clicked view row is the table row (correction_widget.py)
    table = widgets["uncertainRegionsTableView"]
    assert _property(table, "sortingEnabled").findtext("bool") == "false"
    assert _property(table, "editTriggers").findtext("set") == "QAbstractItemView::NoEditTriggers"
    slider = widgets["segmentThresholdSliderWidget"]
    assert float(_property(slider, "maximum").findtext("double")) == 1.0
    assert float(_property(slider, "singleStep").findtext("double")) <= 0.01
    assert _property(widgets["downloadButton"], "enabled").findtext("bool") == "false"


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
    from HybridAttentionSegLib.gui import model_info

    assert model_info.modelChoices(ENVIRONMENT) == [("A (a-model)", "a-model"),
                                                   ("B <b>bold</b> (b-model)", "b-model")]
    assert model_info.deviceChoices(ENVIRONMENT) == [
        ("Auto (GPU 0: NVIDIA H100 80GB HBM3, 79.1 GiB)", "auto"),
        ("GPU 0: NVIDIA H100 80GB HBM3, 79.1 GiB", "cuda:0"), ("CPU", "cpu")]
    assert model_info.deviceChoices({"devices": [{"id": "cpu"}]}) == [("CPU only", "cpu")]
    card = model_info.cardByIdFrom(ENVIRONMENT, "b-model")
    # a card without a measured explanations block: every map offered, labelled "not evaluated"
    assert model_info.attentionChoices(card)[0] == ("rollout (natural) (not evaluated)", "rollout")
    assert model_info.classChoices(card) == [("Largest structure", ""), ("Liver", "Liver")]
    html = model_info.modelCardHtml(card)
    assert "B &lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html  # card text is escaped
    assert "Dice (Liver): 0.951" in html and "CC-BY-4.0" in html
    assert "No model selected" in model_info.modelCardHtml(None)


def test_dependency_check_reads_metadata_without_importing():

    from HybridAttentionSegLib.gui.install import DependencyInstaller, missingRequirements

    assert missingRequirements(["numpy>=1.0", "numpy>=999", "surely-not-installed-hybridseg>=1"]) == [
        "numpy>=999", "surely-not-installed-hybridseg>=1"]
    was_loaded = "torch" in sys.modules
    DependencyInstaller(requirements=["torch>=2.10", "monai>=1.6"]).missing()
    assert ("torch" in sys.modules) == was_loaded, "checking must not import torch into Slicer's process"


def test_model_card_shows_size_download_state_speed_and_memory():
    from HybridAttentionSegLib.gui import model_info

    card = {"id": "big", "title": "Big", "natural_method": "rollout", "attention_methods": ["rollout"],
            "labels": [], "license": "Apache-2.0", "inference": {"roi_size": [96, 96, 96]},
            "weights": {"url": "https://example.org/w.pt", "size_bytes": 231_022_652},
            "resources": {"parameters": 92_802_478, "weights_mb": 371, "gpu_memory_gb_recommended": 8,
                          "cpu_ram_gb_recommended": 16, "basis": "estimates <not measured>",
                          "cpu_measured": {"peak_rss_mb_one_window": 1283, "forward_seconds_one_window": 4.7,
                                           "conditions": "1 thread"},
                          "cuda_measured": {"forward_seconds_one_window": 0.05, "peak_mib": 4411.2}}}
    html = model_info.modelCardHtml(card)
    assert "92.8 M parameters" in html and "weights 371 MB" in html and "download 231 MB" in html
    assert "not downloaded yet (231 MB, hash-checked download)" in html
    assert "<b>Speed (CPU, measured):</b> 4.7 s per 96x96x96 window" in html
    assert "<b>Speed (CUDA, measured):</b> 0.05 s per 96x96x96 window" in html
    assert "1,283 MB peak" in html and "4,411 MB peak" in html and "GPU 8 GB, RAM 16 GB" in html
    assert "estimates &lt;not measured&gt;" in html  # card text is escaped
    assert "downloaded (in the cache)" in model_info.modelCardHtml({**card, "downloaded": True})
    bundled = model_info.modelCardHtml({**card, "bundled": True, "downloaded": True})
    assert "bundled with the extension" in bundled and "download 231 MB" not in bundled
    no_size = {**card, "weights": {"url": "https://example.org/w.pt"}, "resources": {"weights_mb": 256}}
    assert model_info.weightsStatus(no_size) == "not downloaded yet (about 256 MB, hash-checked download)"
    assert model_info.resourcesHtml({"id": "x", "weights": {}}) == ""  # nothing known: nothing shown


def _method(tree, cls: str, name: str) -> ast.FunctionDef:
    owner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(n for n in owner.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_widget_sets_injected_parts_before_the_base_class_can_call_setup():
    """Without a parent, ``ScriptedLoadableModuleWidget.__init__`` calls ``setup()`` itself (Slicer's
    ScriptedLoadableModule.py), so ``logic``/``installer`` must exist before that call."""
    init = _method(ast.parse(MODULE_PATH.read_text()), "HybridAttentionSegWidget", "__init__")
    statements = [ast.unparse(s) for s in init.body]
    base = next(i for i, s in enumerate(statements) if s.startswith("ScriptedLoadableModuleWidget.__init__"))
    for attribute in ("self.logic = logic", "self.installer = installer", "self._binding = "):
        assert any(s.startswith(attribute) for s in statements[:base]), f"{attribute} after the base __init__"


def test_leaving_the_module_keeps_the_gui_bound_and_enter_rebinds_only_a_new_node():
    """Slicer 5.10's ``disconnectGui`` leaks an observer per connect/disconnect cycle (fixed in 5.12): exit
    must not disconnect, and (re)connecting goes through ``ParameterNodeBinding`` (tested in
    test_panel_state.py)."""
    tree = ast.parse(MODULE_PATH.read_text())
    exit_source = ast.unparse(_method(tree, "HybridAttentionSegWidget", "exit"))
    assert "setParameterNode" not in exit_source and "disconnectGui" not in exit_source
    set_source = ast.unparse(_method(tree, "HybridAttentionSegWidget", "setParameterNode"))
    assert "self._binding.bind(" in set_source
    binding = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                   and ast.unparse(n.func) == "ParameterNodeBinding")
    inside = {id(n) for n in ast.walk(binding)}
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("connectGui", "disconnectGui")
            and isinstance(n.ctx, ast.Load)]
    assert uses and all(id(n) in inside for n in uses), "connect only through ParameterNodeBinding"


def test_no_qt_slot_blocks_on_the_worker():
    """Panels ask the worker with ``waitForCompletion=False`` and are polled by a QTimer; blocking calls (the
    Logic's default) are only for scripts and the self-test."""
    gui = MODULE_DIR / "HybridAttentionSegLib" / "gui"
    for path in [MODULE_PATH, *(gui / n for n in ("main_panel.py", "catalog_panel.py", "correction_panel.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "fetchEnvironment", "process", "downloadModel", "importModel", "request", "loadSampleData"):
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert keywords.get("waitForCompletion") == "False", f"{path.name}:{node.lineno} blocks"
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("waitForTask", "waitEvent"), f"{path.name}:{node.lineno}"


def test_self_test_checks_the_packages_before_any_inference():
    """The extension build machines run ``--testing`` without torch: real inference is skipped, clearly."""
    tree = ast.parse((MODULE_DIR / "HybridAttentionSegLib" / "gui" / "self_test.py").read_text())
    body = _method(tree, "SelfTest", "test_SegmentBundledDemoData").body
    sources = [ast.unparse(s) for s in body]
    check = next(i for i, s in enumerate(sources) if "DependencyInstaller().missing()" in s)
    skip = next(i for i, s in enumerate(sources) if s.startswith("if missing:"))
    worker = next(i for i, s in enumerate(sources) if "HybridAttentionSegLogic()" in s)
    assert check < skip < worker
    assert "Skipped real inference" in sources[skip] and "return" in sources[skip]
    assert "skipTest" not in ast.unparse(tree), "Reload and Test would report SkipTest as a failure"


def test_installer_imports_slicer_packaging_explicitly():
    """``slicer/__init__.py`` never imports the ``slicer.packaging`` submodule (Slicer >= 5.11): looking it up as
    an attribute finds nothing and silently skips ``pip_ensure``."""
    source = (MODULE_DIR / "HybridAttentionSegLib" / "gui" / "install.py").read_text()
    assert "import slicer.packaging" in source
    assert 'getattr(slicer, "packaging"' not in source
