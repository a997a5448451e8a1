"""Logic transactions on a real slicer-core scene: options checked before the worker starts; results built
aside and swapped in; on a failure the scene and the user's segmentation, segment by segment, are exactly as
before and no node is left behind (issue 10, item 7).

Result files are real: written by the real worker (Logic tests) or by the real engine with a thresholding
"model" (commit tests), read by Slicer's own storage nodes.
"""

from __future__ import annotations

import hashlib
import time

import nibabel as nib
import numpy as np
import pytest
import slicer
import vtk
import vtk.util.numpy_support
from HybridAttentionSegLib import HybridAttentionSegLogic
from HybridAttentionSegLib.core.errors import UserInputError
from HybridAttentionSegLib.core.inference.engine import Segmenter
from HybridAttentionSegLib.core.inference.io import read_volume
from HybridAttentionSegLib.core.inference.results import write_result
from HybridAttentionSegLib.core.models.cards import ModelCard
from HybridAttentionSegLib.mrml import outputs, transaction
from HybridAttentionSegLib.mrml.logic import ProcessEvent
from HybridAttentionSegLib.worker.client import WorkerClient
from synthetic import ThresholdNet, card_dict

SHAPE = (40, 44, 36)


@pytest.fixture
def blob_file(tmp_path):
    """A smooth blob at 2 mm: thresholds at different levels give nested, different segmentations."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    data = np.exp(-3 * (grid**2).sum(0)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-39.0, -43.0, -35.0)
    path = tmp_path / "blob.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _matrix(node) -> tuple:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return tuple(np.round(slicer.util.arrayFromVTKMatrix(matrix), 6).ravel())


def _mask(segment) -> tuple[np.ndarray, tuple]:
    """The segment's voxels and their grid, read from its binary labelmap (slicer.util's export helper would
    leave display nodes behind in slicer-core, so it cannot be used to compare scenes)."""
    image = segment.GetRepresentation("Binary labelmap")
    if image is None or image.GetPointData().GetScalars() is None:
        return np.zeros(0, bool), ()
    values = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    grid = (image.GetExtent(), tuple(np.round(slicer.util.arrayFromVTKMatrix(matrix), 6).ravel()))
    return values == segment.GetLabelValue(), grid


def _segments(node, reference) -> list:
    segmentation, display = node.GetSegmentation(), node.GetDisplayNode()
    rows = []
    for i in range(segmentation.GetNumberOfSegments()):
        identifier = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(identifier)
        tag = vtk.reference("")
        segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        mask, grid = _mask(segment)
        rows.append((identifier, segment.GetName(), tuple(np.round(segment.GetColor(), 6)), tag.get(),
                     _digest(mask), int(mask.sum()), grid,
                     (display.GetSegmentVisibility(identifier), display.GetSegmentOpacity2DFill(identifier))
                     if display is not None else None))
    return rows


def scene_state(scene, reference) -> dict:
    """Everything a user could see or rely on, node by node (IDs, contents, references, layers, hierarchy)."""
    nodes = scene.GetNodes()
    state = {"nodes": sorted((nodes.GetItemAsObject(i).GetID(), nodes.GetItemAsObject(i).GetClassName(),
                              nodes.GetItemAsObject(i).GetName()) for i in range(nodes.GetNumberOfItems()))}
    hierarchy = scene.GetSubjectHierarchyNode()
    state["hierarchy_items"] = hierarchy.GetNumberOfItems() if hierarchy is not None else 0
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        key = node.GetID()
        roles = [node.GetNthNodeReferenceRole(r) for r in range(node.GetNumberOfNodeReferenceRoles())]
        entry = {"refs": sorted((role, node.GetNodeReferenceID(role) or "") for role in roles),
                 "attributes": sorted((name, node.GetAttribute(name)) for name in node.GetAttributeNames())}
        if node.IsA("vtkMRMLSegmentationNode"):
            entry["segments"] = _segments(node, reference)
        elif node.IsA("vtkMRMLVolumeNode") and node.GetImageData() is not None:
            entry["voxels"] = _digest(slicer.util.arrayFromVolume(node))
            entry["matrix"] = _matrix(node)
        elif node.IsA("vtkMRMLTableNode"):
            entry["table"] = [node.GetCellText(r, c) for r in range(node.GetNumberOfRows())
                              for c in range(node.GetNumberOfColumns())]
        elif node.IsA("vtkMRMLScalarVolumeDisplayNode"):
            entry["display"] = (node.GetColorNodeID(), node.GetLowerThreshold(), node.GetApplyThreshold())
        elif node.IsA("vtkMRMLSliceCompositeNode"):
            entry["layers"] = (node.GetBackgroundVolumeID(), node.GetForegroundVolumeID(),
                               round(node.GetForegroundOpacity(), 6))
        if hierarchy is not None and hierarchy.GetItemByDataNode(node):
            entry["parent"] = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))
        if node.IsA("vtkMRMLTransformableNode"):
            entry["transform"] = node.GetTransformNodeID()
        state[key] = entry
    return state


def _slice_views(scene):
    for name in ("Red", "Yellow", "Green"):
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(name)


def _user_segmentation(scene, volume):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user work")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    identifier = node.GetSegmentation().AddEmptySegment("Tumor", "Tumor", (0.9, 0.1, 0.1))
    mask = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
    mask[3:9, 5:12, 4:10] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, identifier, volume)
    node.GetDisplayNode().SetSegmentOpacity2DFill(identifier, 0.25)
    return node


class _Shifted(ThresholdNet):
    """ThresholdNet at another level (x + shift > 0.5): a different, still known, segmentation."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return super().forward(x + self.shift)


def _result_files(blob_file, out_dir, shift: float) -> dict:
    """Real result files (engine + writer) and the summary the worker would send."""
    card = ModelCard.from_dict(card_dict("attention_unet", roi=(32, 32, 32), model_id="tx-model"))
    result = Segmenter(card, device="cpu", model=_Shifted(shift)).run(
        read_volume(blob_file), attention=["uncertainty"])
    summary = write_result(result, out_dir, "result", probabilities=True)
    summary.update(labels=card.labels, title=card.title, natural_method="uncertainty")
    return summary


@pytest.mark.parametrize("into_user_segmentation", [True, False], ids=["existing-output", "new-output"])
def test_a_commit_that_fails_at_the_last_step_leaves_the_scene_exactly_as_before(
        headless_app, blob_file, tmp_path, into_user_segmentation):
    """The issue's case: a bad display option found after inference, once segments and nodes were swapped in."""
    scene = headless_app.scene
    _slice_views(scene)
    volume = headless_app.loadVolume(blob_file, "blob")
    user = _user_segmentation(scene, volume)
    first = transaction.importResult(volume, _result_files(blob_file, tmp_path / "first", 0.0),
                                     outputSegmentation=user, display={"opacity": 0.4, "colorMap": "Viridis"})
    assert first.segmentationNode is user and len(first.newSegmentIds) == 2
    before = scene_state(scene, volume)

    second = _result_files(blob_file, tmp_path / "second", 0.3)  # a different, larger segmentation
    staged = transaction.stageResult(volume, second)
    assert scene_state(scene, volume) == before, "staging must not touch the scene"
    with pytest.raises(ValueError, match="unknown colour map"):
        transaction.commitResult(volume, staged, second, outputSegmentation=user if into_user_segmentation
                                 else None, display={"colorMap": "NoSuchMap"})
    after = scene_state(scene, volume)
    assert after["nodes"] == before["nodes"], "no node may be added or removed by a failed import"
    for key in before:
        assert after[key] == before[key], f"{key} changed by a failed import: {before[key]} -> {after[key]}"

    # the same staged result commits cleanly afterwards, replacing this model's segments in place
    good = transaction.commitResult(volume, staged, second, outputSegmentation=user)
    assert good.newSegmentIds == []
    ids = [user.GetSegmentation().GetNthSegmentID(i) for i in range(user.GetSegmentation().GetNumberOfSegments())]
    assert ids == [row[0] for row in before[user.GetID()]["segments"]], "segment order is kept"
    model_voxels = {row[0]: row[5] for row in _segments(user, volume)}
    assert model_voxels[outputs.segmentId("tx-model", 1)] > before[user.GetID()]["segments"][1][5]


@pytest.fixture
def tiny_logic(tiny_catalog):
    instance = HybridAttentionSegLogic(WorkerClient(threads=1), catalogFiles=list(tiny_catalog.values()))
    yield instance
    instance.shutdown()


BAD_OPTIONS = {
    "colour map": ({"display": {"colorMap": "Jet"}}, "unknown colour map"),
    "opacity": ({"display": {"opacity": 1.5}}, "opacity"),
    "threshold": ({"display": {"threshold": float("nan")}}, "threshold"),
    "display key": ({"display": {"opacty": 0.5}}, "unknown display option"),
    "legend": ({"display": {"showLegend": "yes"}}, "showLegend"),
    "methods": ({"attentionMethods": "gates"}, "list of method names"),
    "class": ({"targetClass": 2}, "targetClass"),
    "device": ({"device": "gpu"}, "unknown device"),
    "probabilities": ({"keepProbabilities": "no"}, "keepProbabilities"),
    "timeout": ({"timeout": 0}, "timeout"),
}


def test_bad_options_fail_before_the_worker_starts(headless_app, tiny_logic, blob_file, private_tmp):
    scene = headless_app.scene
    volume = headless_app.loadVolume(blob_file, "blob")
    before = scene_state(scene, volume)
    for name, (options, words) in BAD_OPTIONS.items():
        with pytest.raises(UserInputError, match=words) as err:
            tiny_logic.process(volume, "tiny-gates", **options)
        assert "\n" not in str(err.value), name
    assert tiny_logic.worker.pid is None, "no worker may be started for a run with a bad option"
    assert list(private_tmp.iterdir()) == [] and not tiny_logic.isRunning
    assert scene_state(scene, volume) == before


def test_an_unreadable_result_file_fails_the_run_without_touching_the_user_segmentation(
        headless_app, tiny_logic, blob_file, private_tmp):
    scene = headless_app.scene
    _slice_views(scene)
    volume = headless_app.loadVolume(blob_file, "blob")
    user = _user_segmentation(scene, volume)
    tiny_logic.process(volume, "tiny-gates", outputSegmentation=user, attentionMethods=["gates", "uncertainty"])
    before = scene_state(scene, volume)

    task = tiny_logic.process(volume, "tiny-gates", outputSegmentation=user, waitForCompletion=False,
                              attentionMethods=["gates", "uncertainty"])
    summary = task.tempDir / "out" / "result.json"
    deadline = time.monotonic() + 300
    while not summary.exists():  # the worker is done writing; its answer waits in the pipe (no poll yet)
        assert time.monotonic() < deadline, "the worker wrote no result within 300 s"
        time.sleep(0.05)
    probabilities = task.tempDir / "out" / "result.probabilities.nrrd"
    probabilities.write_bytes(probabilities.read_bytes()[:200])  # the last file the import reads
    while not task.done:
        tiny_logic.poll(0.1)
    assert task.state == ProcessEvent.FAILED
    assert scene_state(scene, volume) == before
    assert list(private_tmp.iterdir()) == []
