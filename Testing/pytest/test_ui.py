"""Structure of the Slicer module outside Slicer: the .ui, its binding to the parameter node, the packaging.

The Qt widget itself only runs inside Slicer (PythonQt/CTK do not exist on PyPI), so these tests read
the files: the .ui parses; every ``self.ui.X`` the widget code (the Qt-side panels ``gui/main_panel.py``,
``gui/catalog_panel.py`` and ``gui/correction_panel.py``) uses exists with the expected class, in the expected section;
every parameter-node field is bound through ``SlicerParameterName`` to a widget whose class Slicer's GUI
connectors accept for the field's type; CMake lists every Lib file; developer reload covers every Slicer-side
Lib module, dependencies first; requirements have floors, not pins. The pure helpers behind the panel (model
card HTML, sample-data registration from the cards) are tested on real card files.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
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
    import sys

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


def _sample_card(model_id, **sample):
    from helpers_weights import tiny_card

    card = tiny_card("segresnet", model_id, file="weights.safetensors", sha256="0" * 64)
    card["sample_data"] = sample
    return card


def test_sample_data_from_cards_public_https_with_sha256_only(tmp_path, monkeypatch, caplog):
    from helpers_weights import write_card
    from HybridAttentionSegLib.mrml import sample_data

    digest = "5e" * 32  # not the built-in abdominal CT cards' file (they register theirs too)
    url = f"https://example.org/SHA256/{digest}"
    (tmp_path / "thumb.png").write_bytes(b"png")
    good = write_card(tmp_path / "good.json", _sample_card(
        "ct-a", name="CTA abdomen (Panoramix)", url=url, sha256=digest.upper(), file_name="Panoramix-cropped.nrrd",
        thumbnail="thumb.png"))
    both = tmp_path / "list.json"
    both.write_text(json.dumps([
        _sample_card("ct-b", name="same file again", url=url, sha256=digest),  # one registration per file
        _sample_card("plain-http", url="http://example.org/x.nrrd", sha256="a" * 64),
        _sample_card("no-hash", url="https://example.org/x.nrrd"),
        _sample_card("local", loader="core.data.mni.load_template"),  # loaded by the worker, not SampleData
        {**_sample_card("none"), "sample_data": None},
    ]))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HYBRIDSEG_CATALOG", os.pathsep.join([str(good), str(both), str(broken)]))
    calls = []
    names = sample_data.registerSampleData(register=lambda **kwargs: calls.append(kwargs))
    assert "CTA abdomen (Panoramix)" in names and "same file again" not in names
    assert "Panoramix abdominal CTA (cropped)" in names  # the built-in swin-unetr-btcv / unetr-btcv sample, once
    assert {"category": "HybridAttentionSeg", "sampleName": "CTA abdomen (Panoramix)", "uris": url,
            "fileNames": "Panoramix-cropped.nrrd", "nodeNames": "Panoramix-cropped",
            "checksums": f"SHA256:{digest}", "loadFileTypes": "VolumeFile",
            "thumbnailFileName": str(tmp_path / "thumb.png")} in calls
    assert len(calls) == len(names) == 2
    logged = caplog.text
    assert "plain-http" in logged and "no-hash" in logged and "broken.json" in logged
    assert "'local'" not in logged  # a local sample is not an error

    def failing(**kwargs):
        raise RuntimeError("SampleData is broken")

    assert sample_data.registerSampleData(register=failing) == []  # never breaks Slicer's startup


def test_sample_data_reads_the_same_catalog_files_as_the_core(tmp_path, monkeypatch):
    from helpers_weights import write_card
    from HybridAttentionSegLib.core import paths
    from HybridAttentionSegLib.core.models import cards
    from HybridAttentionSegLib.mrml import sample_data

    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "catalog").mkdir(parents=True)
    write_card(tmp_path / "cache" / "catalog" / "a.json", _sample_card("imported"))
    monkeypatch.setenv("HYBRIDSEG_CATALOG", str(write_card(tmp_path / "extra.json", _sample_card("extra"))))
    ids = [card["id"] for card, _path in sample_data.readCards(paths.catalog_files())]
    assert {"imported", "extra"} <= set(ids) and set(ids) == set(cards.load_catalog())
    monkeypatch.delenv("HYBRIDSEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "hybridseg"


def test_sample_data_does_not_import_torch():
    code = "import sys; import HybridAttentionSegLib.mrml.sample_data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# --- the Widget binding (audit #3, #5, #6, #9, #10): structure, since the Widget only runs inside Slicer -------
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
