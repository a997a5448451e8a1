"""The extension's metadata against the rules Slicer's Extensions Index and Extension Wizard apply.

Files checked: ``Resources/HybridAttentionSeg.json`` (the catalog entry submitted to the index), the top-level
``CMakeLists.txt`` and ``HybridAttentionSeg/CMakeLists.txt``, and the module's declared dependencies.

Where the rules come from (read, not copied as code; the rules are written below as data):

* ``SCHEMA_V1_0_2``: ``schemas/slicer-extension-catalog-entry-schema-v1.0.2.json`` in Slicer/ExtensionsIndex at
  commit 07f1d1b (2026-08-07), also published as ``Schemas/...-v1.0.2.json`` in Slicer/Slicer (its ``$id``):
  required keys, ``additionalProperties: false``, each property's type, ``scm_type`` enum, ``tier`` range.
* ``INDEX_*``: ``scripts/check_description_files.py`` at the same commit (the index CI): JSON must parse and use
  LF line endings, the schema is downloaded from ``$schema`` (fragment stripped) so it must name a published
  schema, known categories, ``scm_url`` scheme, the *repository* name must start with "Slicer" while the
  *extension* name must not, ``project()`` in the top CMakeLists must equal the JSON file name,
  ``EXTENSION_ICONURL`` / ``EXTENSION_SCREENSHOTURLS`` must be image URLs, a LICENSE file, repository <= 100 MB.
  ``build_dependencies`` must name extensions of the index (``PyTorch.json`` is there at 07f1d1b).
* ``WIZARD_*``: Slicer's Extension Wizard templates at tag v5.10.0 (``Utilities/Templates/Extensions/Default/
  CMakeLists.txt``, ``Utilities/Templates/Modules/Scripted/CMakeLists.txt``): statement order, the
  ``## NEXT_MODULE`` marker the wizard inserts modules at, contributors as "Name (Organization)", the module
  build macro with generic tests and the self-test registered under ``BUILD_TESTING``. The CMake range is the
  v5.10.0 template's, which is also what ``SlicerConfig.cmake.in`` requires in v5.10.0, v5.12.0 and main.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "Resources" / "HybridAttentionSeg.json"
TOP_CMAKE = ROOT / "CMakeLists.txt"
MODULE_CMAKE = ROOT / "HybridAttentionSeg" / "CMakeLists.txt"
MODULE_PATH = ROOT / "HybridAttentionSeg" / "HybridAttentionSeg.py"
LIB = ROOT / "HybridAttentionSeg" / "HybridAttentionSegLib"
UI_PATH = ROOT / "HybridAttentionSeg" / "Resources" / "UI" / "HybridAttentionSeg.ui"

# --- ExtensionsIndex schemas/slicer-extension-catalog-entry-schema-v1.0.2.json (draft-07) -------------------
SCHEMA_V1_0_2 = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "dicom_support_rule": {"type": "string"},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
#: the schema's ``$id``: the URL check_json_schema downloads (after stripping the fragment)
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json"

# --- ExtensionsIndex scripts/check_description_files.py ------------------------------------------------------
INDEX_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT",
    "Informatics", "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning",
    "Otolaryngology", "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy",
    "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography",
    "Training", "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools",
    "Web System Tools", "Wizards",
}
INDEX_SCM_SCHEMES = {"git", "https"}
INDEX_REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
INDEX_PROJECT_PATTERN = r"project\s*\(\s*([^\s\)\n\r]+)"
INDEX_ICON_PATTERN = r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)'
INDEX_SCREENSHOTS_PATTERN = r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)'
INDEX_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
INDEX_LICENSE_FILES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
INDEX_SIZE_LIMIT_MB = 100
INDEX_EXTENSIONS_AT_07F1D1B = {"PyTorch", "NNUNet"}  # the build dependencies this project may name

# --- Extension Wizard templates (Slicer v5.10.0) ----------------------------------------------------------
WIZARD_CMAKE_MINIMUM = "cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)"
WIZARD_EXTENSION_KEYS = ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                         "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")
#: statements of the extension template, in this order
WIZARD_TOP_ORDER = ("cmake_minimum_required(", "project(", "set(EXTENSION_HOMEPAGE", "find_package(Slicer REQUIRED)",
                    "include(${Slicer_USE_FILE})", "add_subdirectory(", "## NEXT_MODULE",
                    "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})")
WIZARD_CONTRIBUTOR = re.compile(r"[^(),]+ \([^()]+\)")  # "John Doe (AnyWare Corp.)", comma-separated
WIZARD_MODULE_ORDER = ("set(MODULE_NAME ", "set(MODULE_PYTHON_SCRIPTS", "set(MODULE_PYTHON_RESOURCES",
                       "slicerMacroBuildScriptedModule(", "if(BUILD_TESTING)",
                       "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)", "add_subdirectory(Testing)", "endif()")


def _validate(entry: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(SCHEMA_V1_0_2)
    return sorted(error.message for error in validator.iter_errors(entry))


def _cmake_set(text: str, key: str) -> str:
    match = re.search(rf'set\({key}\s+"([^"]*)"\)', text)
    assert match, f"set({key} \"...\") missing"
    return match.group(1)


def _repository(url: str) -> tuple[str, str]:
    """(owner, repository) of a github.com or raw.githubusercontent.com URL."""
    parts = urllib.parse.urlsplit(url).path.strip("/").split("/")
    return parts[0], parts[1].removesuffix(".git")


def test_catalog_entry_passes_schema_v1_0_2():
    text = ENTRY.read_bytes()
    assert b"\r" not in text, "LF line endings only (check_json_file_format)"
    entry = json.loads(text)
    assert _validate(entry) == []
    assert entry["$schema"].split("#")[0] == SCHEMA_URL


def test_the_schema_rules_catch_the_old_entry():
    """The entry this project shipped before: its misspelled keys and schema name fail these rules."""
    old = {"$schema": "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                      "slicer-extension-catalog-item-schema-v1.0.0.json#",
           "build_dependencies": ["PyTorch"], "build_subdirectory": ".", "category": "Segmentation",
           "scmrevision": "main", "scmurl": "https://github.com/x/y"}
    errors = _validate(old)
    assert "'scm_url' is a required property" in errors
    assert any("'scmrevision', 'scmurl' were unexpected" in e for e in errors)
    assert old["$schema"].split("#")[0] != SCHEMA_URL
    assert _validate({**json.loads(ENTRY.read_text()), "tier": 7}) == ["7 is greater than the maximum of 5"]


def test_catalog_entry_passes_the_index_checks():
    entry = json.loads(ENTRY.read_text())
    extension = ENTRY.stem
    assert not extension.lower().startswith("slicer"), "the extension name must not start with 'Slicer'"
    assert entry["category"] in INDEX_CATEGORIES
    scheme = urllib.parse.urlsplit(entry["scm_url"]).scheme
    assert "://" in entry["scm_url"] and scheme in INDEX_SCM_SCHEMES
    _owner, repository = _repository(entry["scm_url"])
    assert repository.startswith(INDEX_REPOSITORY_PREFIXES), (
        f"the repository name {repository!r} must start with 'Slicer' (check_git_repository_name)")
    assert set(entry.get("build_dependencies", [])) <= INDEX_EXTENSIONS_AT_07F1D1B
    top = TOP_CMAKE.read_text()
    assert re.findall(INDEX_PROJECT_PATTERN, top, re.IGNORECASE)[0] == extension
    icons = re.findall(INDEX_ICON_PATTERN, top, re.IGNORECASE)
    screenshots = re.findall(INDEX_SCREENSHOTS_PATTERN, top, re.IGNORECASE)
    assert icons and screenshots, "EXTENSION_ICONURL and EXTENSION_SCREENSHOTURLS as the index script parses them"
    for url in [icons[0], *screenshots[0].split()]:
        assert url.startswith("https://") and url.lower().endswith(INDEX_IMAGE_SUFFIXES), url
    assert any((ROOT / name).is_file() for name in INDEX_LICENSE_FILES)


def test_repository_stays_under_the_index_size_limit():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                           timeout=60).stdout.decode().split("\0")
    size = sum((ROOT / name).stat().st_size for name in files if name and (ROOT / name).is_file())
    assert size / 2**20 < INDEX_SIZE_LIMIT_MB, f"{size / 2**20:.1f} MB"


def test_every_url_names_the_same_repository_and_existing_files():
    entry = json.loads(ENTRY.read_text())
    top = TOP_CMAKE.read_text()
    owner, repository = _repository(entry["scm_url"])
    homepage = _cmake_set(top, "EXTENSION_HOMEPAGE")
    module_homepage = re.search(r'^HOMEPAGE = "([^"]+)"', MODULE_PATH.read_text(), re.MULTILINE).group(1)
    assert homepage == module_homepage == f"https://github.com/{owner}/{repository}"
    images = [_cmake_set(top, "EXTENSION_ICONURL"), *_cmake_set(top, "EXTENSION_SCREENSHOTURLS").split()]
    for url in images:
        parts = urllib.parse.urlsplit(url)
        assert parts.netloc == "raw.githubusercontent.com" and _repository(url) == (owner, repository), url
        branch_and_path = parts.path.strip("/").split("/")[2:]
        assert branch_and_path[0] == entry["scm_revision"], url
        assert (ROOT.joinpath(*branch_and_path[1:])).is_file(), f"{url} points at no file of this repository"
    readme = (ROOT / "README.md").read_text()
    assert f"github.com/{owner}/{repository}" in readme and "must start with" in readme


def test_cmake_follows_the_extension_wizard_template():
    top = TOP_CMAKE.read_text()
    assert top.splitlines()[0] == WIZARD_CMAKE_MINIMUM
    positions = [top.find(statement) for statement in WIZARD_TOP_ORDER]
    assert -1 not in positions and positions == sorted(positions), dict(zip(WIZARD_TOP_ORDER, positions, strict=True))
    for key in WIZARD_EXTENSION_KEYS:
        assert f"set({key} " in top, key
    contributors = [c.strip() for c in _cmake_set(top, "EXTENSION_CONTRIBUTORS").split(",")]
    assert all(WIZARD_CONTRIBUTOR.fullmatch(c) for c in contributors), contributors
    entry = json.loads(ENTRY.read_text())
    depends = _cmake_set(top, "EXTENSION_DEPENDS")
    assert (depends.split(";") if depends != "NA" else []) == entry.get("build_dependencies", [])
    assert _cmake_set(top, "EXTENSION_CATEGORY") == entry["category"]
    module = MODULE_CMAKE.read_text()
    positions = [module.find(statement) for statement in WIZARD_MODULE_ORDER]
    order = dict(zip(WIZARD_MODULE_ORDER, positions, strict=True))
    assert -1 not in positions and positions == sorted(positions), order
    assert "set(MODULE_NAME HybridAttentionSeg)" in module and "WITH_GENERIC_TESTS" in module
    for line in ("${MODULE_NAME}.py", "Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert f"  {line}\n" in module, line


def test_module_declares_contributors_and_the_modules_it_uses():
    """``parent.dependencies`` lists every Slicer module whose logic, widgets or nodes the code uses."""
    tree = ast.parse(MODULE_PATH.read_text())
    declared = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute) \
                and ast.unparse(node.targets[0].value) == "self.parent":
            declared[node.targets[0].attr] = node.value
    dependencies = ast.literal_eval(declared["dependencies"])
    contributors = ast.literal_eval(declared["contributors"])
    assert all(WIZARD_CONTRIBUTOR.fullmatch(c) for c in contributors), contributors
    uses = {  # module -> what in the code or the .ui means that module is needed
        "SampleData": r"import SampleData",
        "SegmentEditor": r'selectModule\("SegmentEditor"\)|vtkMRMLSegmentEditorNode',
        "Markups": r"qSlicerMarkupsPlaceWidget|vtkMRMLMarkups",
        "Segmentations": r"vtkSlicerSegmentationsModuleLogic|vtkMRMLSegmentationNode",
    }
    code = "\n".join(p.read_text() for folder in ("gui", "mrml") for p in (LIB / folder).glob("*.py"))
    code += UI_PATH.read_text()
    used = {module for module, pattern in uses.items() if re.search(pattern, code)}
    assert used == set(uses), f"the rules above no longer match the code: {set(uses) - used}"
    assert used <= set(dependencies), f"declare in parent.dependencies: {sorted(used - set(dependencies))}"


@pytest.mark.parametrize("path", [MODULE_PATH, *sorted((LIB / "gui").glob("*.py"))], ids=lambda p: p.name)
def test_translatable_texts_are_plain_strings(path):
    """``_()`` gets the literal text (``_("... {x}").format(x=...)``): an f-string is never translated."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "tr"):
            assert len(node.args) == 1 and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str), f"{path.name}:{node.lineno}: {ast.unparse(node)}"
