"""What the Logic accepts as input (audit #7), and the slice-view lookup that leaked a collection (audit #8).

Real slicer-core MRML scene, real node classes and real result files; no worker is started (the input check
comes before any request). Needs slicer-core and numpy/pynrrd only (no torch).
"""

from __future__ import annotations

import gc
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import slicer  # noqa: E402
import vtk  # noqa: E402
from HybridAttentionSegLib.core.errors import UserInputError  # noqa: E402
from HybridAttentionSegLib.core.inference.io import write_scalar_nrrd  # noqa: E402
from HybridAttentionSegLib.mrml import outputs  # noqa: E402
from HybridAttentionSegLib.mrml.inputs import REFUSED_INPUT_CLASSES, inputVolumeProblem  # noqa: E402
from HybridAttentionSegLib.mrml.logic import HybridAttentionSegLogic  # noqa: E402
from HybridAttentionSegLib.worker.client import WorkerClient  # noqa: E402

UI_PATH = Path(__file__).resolve().parents[2] / "HybridAttentionSeg" / "Resources" / "UI" / "HybridAttentionSeg.ui"
#: volume classes a user can have in the scene that are not a scalar image (MRML derives them all from
#: vtkMRMLScalarVolumeNode, so the parameter node's type alone lets them through)
NOT_IMAGES = ("vtkMRMLVectorVolumeNode", "vtkMRMLDiffusionTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode",
              "vtkMRMLLabelMapVolumeNode", "vtkMRMLStreamingVolumeNode")
LABELS = [{"value": 1, "name": "Liver", "color": [0.8, 0.3, 0.2]}]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _input_selector_hidden_types() -> list[str]:
    root = ET.parse(UI_PATH).getroot()
    selector = next(w for w in root.iter("widget") if w.get("name") == "inputVolumeSelector")
    prop = next(p for p in selector.findall("property") if p.get("name") == "hideChildNodeTypes")
    return [s.text for s in prop.iter("string")]


def _image(scene, name="T1"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetSpacing(2.0, 2.0, 2.0)
    slicer.util.updateVolumeFromArray(node, np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8))
    return node


@pytest.fixture
def logic():
    instance = HybridAttentionSegLogic(WorkerClient(threads=1))
    yield instance
    instance.shutdown()


def test_vector_dti_dwi_and_label_volumes_are_refused_before_any_request(headless_app, logic):
    scene = headless_app.scene
    image = _image(scene)
    assert inputVolumeProblem(image) == ""
    for className in NOT_IMAGES:
        node = scene.AddNewNodeByClass(className, f"a {className}")
        assert node.IsA("vtkMRMLScalarVolumeNode"), "the reason for the check: MRML calls them scalar volumes"
        problem = inputVolumeProblem(node)
        assert className in problem and "select a scalar (image) volume" in problem
        with pytest.raises(UserInputError, match="not a scalar image"):
            logic.process(node, "any-model")
    assert not logic.worker.running, "a refused input must not start the worker"


def test_the_modules_own_outputs_are_refused(headless_app, logic, tmp_path):
    scene = headless_app.scene
    image = _image(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    created = []
    probabilities_file = write_scalar_nrrd(tmp_path / "p.nrrd", np.random.default_rng(0).random(
        (2, 8, 7, 6)).astype(np.float32), AFFINE)
    attention_file = write_scalar_nrrd(tmp_path / "a.nrrd", np.ones((8, 7, 6), np.float32), AFFINE)
    probabilities = outputs.addProbabilities(scene, image, segmentation, probabilities_file, LABELS, created)
    attention = outputs.addAttentionVolume(scene, image, segmentation, "gates", attention_file, created)
    assert probabilities.IsA("vtkMRMLVectorVolumeNode") and not attention.IsA("vtkMRMLVectorVolumeNode")
    assert "probabilities" in inputVolumeProblem(probabilities)
    assert "attention map" in inputVolumeProblem(attention)  # a plain scalar volume, refused by its attribute
    for node in (probabilities, attention):
        with pytest.raises(UserInputError, match="select the image it was computed on"):
            logic.process(node, "any-model")
    assert not logic.worker.running


def test_the_input_selector_hides_exactly_what_the_logic_refuses(headless_app):
    """The .ui's ``hideChildNodeTypes`` (matched with IsA, as qMRMLSortFilterProxyModel does) and the Logic's
    check agree on every volume class, checked on real nodes of each class."""
    scene = headless_app.scene
    hidden = _input_selector_hidden_types()
    assert set(REFUSED_INPUT_CLASSES) <= set(hidden)
    for className in (*NOT_IMAGES, "vtkMRMLScalarVolumeNode"):
        node = scene.AddNewNodeByClass(className)
        is_hidden = any(node.IsA(hiddenClass) for hiddenClass in hidden)
        assert is_hidden == (className != "vtkMRMLScalarVolumeNode"), className
        assert is_hidden == bool(inputVolumeProblem(node)), className


def test_slice_view_lookups_release_the_collection_they_get(headless_app):
    """``vtkMRMLScene::GetNodesByClass`` hands the caller a new collection to delete; before the fix the
    Python side dropped its reference but the C++ one stayed: one leaked collection per display change."""
    scene = headless_app.scene
    for layout in ("Red", "Yellow", "Green"):
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(layout)
    deleted = []
    real = scene.GetNodesByClass

    def recording(className):
        collection = real(className)
        collection.AddObserver(vtk.vtkCommand.DeleteEvent, lambda caller, event: deleted.append(className))
        return collection

    scene.GetNodesByClass = recording  # a per-instance attribute: only this scene object is affected
    try:
        outputs.hideAttention(scene)
    finally:
        del scene.GetNodesByClass
    gc.collect()
    assert deleted == ["vtkMRMLSliceCompositeNode"], "the collection outlived the call (leak)"
