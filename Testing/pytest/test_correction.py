"""CorrectionLogic in a real slicer-core scene: threshold, clicks from markups, review, undo, hand-off.

The scene is built the way the Logic builds it (``mrml_outputs.importSegments`` / ``addProbabilities`` from
result files), so the segment IDs and the probability node are the ones a user gets.
"""

from __future__ import annotations

import numpy as np
import pytest
from HybridAttentionSegLib.core.correction.refine import Click, apply_clicks, threshold_segment
from HybridAttentionSegLib.core.inference.io import write_scalar_nrrd, write_segmentation_nrrd
from HybridAttentionSegLib.core.inference.volume import ijk_to_ras
from phantoms import LABELS, ball, make_phantom

MODEL = "phantom-model"
CHUNK_CENTRE = (12, 24, 20)  # inside the shell
BLOB_CENTRE = (3, 24, 20)  # background next to the shell


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _build(app, tmp_path, phantom, labelmap, probabilities=None):
    """Image, segmentation and probability nodes from files, as the Logic imports a result."""
    import slicer
    from HybridAttentionSegLib.mrml import outputs

    scene = app.scene
    image = write_scalar_nrrd(tmp_path / "image.nrrd", phantom.image, phantom.affine)
    volume = app.loadVolume(image, "image")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    path = write_segmentation_nrrd(tmp_path / "result.seg.nrrd", labelmap, phantom.affine, LABELS)
    outputs.importSegments(segmentation, volume, path, LABELS, MODEL)
    segmentation.SetNodeReferenceID(outputs.INPUT_ROLE, volume.GetID())
    probabilities = phantom.probabilities if probabilities is None else probabilities
    path = write_scalar_nrrd(tmp_path / "result.probabilities.nrrd", probabilities, phantom.affine)
    outputs.addProbabilities(scene, volume, segmentation, path, LABELS, [])
    assert isinstance(outputs.segmentId(MODEL, 1), str) and slicer.mrmlScene is scene
    return volume, segmentation


def _mask(segmentation, value, volume):
    """(I, J, K) bool mask of the segment with label ``value``."""
    import slicer
    from HybridAttentionSegLib.mrml import outputs

    array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, outputs.segmentId(MODEL, value), volume)
    return array.transpose(2, 1, 0) > 0


def _ras(phantom, ijk):
    return [float(x) for x in ijk_to_ras(phantom.affine, [ijk])[0]]


@pytest.fixture
def logic():
    from HybridAttentionSegLib.mrml.correction import CorrectionLogic

    return CorrectionLogic()


def test_threshold_slider_matches_the_core_rule_and_is_one_undo_step(headless_app, tmp_path, phantom, logic):
    from HybridAttentionSegLib.mrml import outputs

    volume, segmentation = _build(headless_app, tmp_path, phantom, phantom.labelmap)
    coreId = outputs.segmentId(MODEL, 2)
    original = {v: _mask(segmentation, v, volume) for v in (1, 2)}
    expected = threshold_segment(phantom.labelmap, phantom.probabilities, 2, 0.8) == 2
    for threshold in (0.8, 0.2, 0.5, 0.8):  # one drag
        voxels = logic.setSegmentThreshold(segmentation, coreId, None, threshold)
    np.testing.assert_array_equal(_mask(segmentation, 2, volume), expected)
    assert voxels == expected.sum() < original[2].sum()
    np.testing.assert_array_equal(_mask(segmentation, 1, volume), original[1])  # the shell is untouched
    assert logic.undo(segmentation)
    np.testing.assert_array_equal(_mask(segmentation, 2, volume), original[2])  # one step undoes the drag
    assert not logic.canUndo(segmentation)
    assert logic.redo(segmentation)
    np.testing.assert_array_equal(_mask(segmentation, 2, volume), expected)


def test_clicks_from_markups_restore_a_missing_chunk_replay_and_undo(headless_app, tmp_path, phantom, logic):
    chunk = ball(phantom.reference.shape, CHUNK_CENTRE, 6.0, phantom.spacing) & (phantom.labelmap == 1)
    broken = phantom.labelmap.copy()
    broken[chunk] = 0
    probabilities = phantom.probabilities.copy()
    probabilities[0][chunk] += 0.9 * probabilities[1][chunk]
    probabilities[1][chunk] *= 0.1
    volume, segmentation = _build(headless_app, tmp_path, phantom, broken, probabilities)
    markups = headless_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    logic.addClick(markups, _ras(phantom, CHUNK_CENTRE), "shell")
    report = logic.applyClicks(markups, segmentation)
    assert report[0]["changed"] > 200 and report[0]["segmentId"].endswith("_1")
    clicks = [Click(CHUNK_CENTRE, 1)]
    expected = apply_clicks(phantom.image, broken, probabilities, clicks, phantom.spacing) == 1
    np.testing.assert_array_equal(_mask(segmentation, 1, volume), expected)
    assert (_mask(segmentation, 1, volume) & chunk).sum() >= 0.9 * chunk.sum()
    # removing the point and replaying takes its effect back
    markups.RemoveNthControlPoint(0)
    logic.applyClicks(markups, segmentation)
    np.testing.assert_array_equal(_mask(segmentation, 1, volume), broken == 1)
    # and a correction is undone by undo
    logic.addClick(markups, _ras(phantom, CHUNK_CENTRE), "Shell")
    logic.applyClicks(markups, segmentation)
    assert logic.undo(segmentation)
    np.testing.assert_array_equal(_mask(segmentation, 1, volume), broken == 1)
    np.testing.assert_array_equal(_mask(segmentation, 2, volume), broken == 2)


def test_background_click_and_click_labels(headless_app, tmp_path, phantom, logic):
    from HybridAttentionSegLib.mrml.correction import CLICK_LABEL_ATTRIBUTE

    blob = ball(phantom.reference.shape, BLOB_CENTRE, 5.0, phantom.spacing) & (phantom.labelmap == 0)
    labelmap = phantom.labelmap.copy()
    labelmap[blob] = 1
    probabilities = phantom.probabilities.copy()  # the model 'saw' the blob
    probabilities[:, blob] = 0.2 * probabilities[:, blob] + 0.8 * np.array([0, 1, 0], np.float32)[:, None]
    volume, segmentation = _build(headless_app, tmp_path, phantom, labelmap, probabilities)
    markups = headless_app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    markups.AddControlPointWorld(*_ras(phantom, BLOB_CENTRE), "F-1")  # an auto-named point
    with pytest.raises(ValueError, match="background, Shell, Core"):
        logic.applyClicks(markups, segmentation)
    markups.SetAttribute(CLICK_LABEL_ATTRIBUTE, "background")  # the node's default label
    logic.applyClicks(markups, segmentation)
    shell = _mask(segmentation, 1, volume)
    assert shell[blob].sum() <= 0.05 * blob.sum()
    np.testing.assert_array_equal(shell[~blob], labelmap[~blob] == 1)


def test_uncertain_regions_table_and_next_region(headless_app, tmp_path, phantom, logic):
    import slicer
    from HybridAttentionSegLib.mrml.correction_masks import REGION_COLUMNS

    probabilities = phantom.probabilities.copy()
    unsure = ball(phantom.reference.shape, (24, 24, 20), 4.0, phantom.spacing)  # inside the core
    probabilities[:, unsure] = np.array([0.2, 0.35, 0.45], np.float32)[:, None]
    volume, segmentation = _build(headless_app, tmp_path, phantom, phantom.labelmap, probabilities)
    table = logic.uncertainRegionsTable(segmentation)
    columns = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert columns == list(REGION_COLUMNS)
    assert table.GetNumberOfRows() >= 1
    assert table.GetCellText(0, 1) == "Core" and int(table.GetCellText(0, 2)) >= unsure.sum() * 0.8
    red = slicer.vtkMRMLSliceNode()
    red.SetName("Red")
    red.SetLayoutName("Red")
    headless_app.scene.AddNode(red)
    red.SetOrientation("Axial")
    assert logic.nextRegion(table) == 0
    expected = [float(table.GetCellText(0, i)) for i in (6, 7, 8)]
    assert np.allclose(expected, _ras(phantom, (24, 24, 20)), atol=2.0)
    sliceToRas = red.GetSliceToRAS()
    assert [sliceToRas.GetElement(i, 3) for i in range(3)] == pytest.approx(expected)
    crosshair = headless_app.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
    assert list(crosshair.GetCrosshairRAS()) == pytest.approx(expected)


def test_open_segment_editor_sets_its_parameter_node(headless_app, tmp_path, phantom, logic):
    from HybridAttentionSegLib.mrml import outputs

    volume, segmentation = _build(headless_app, tmp_path, phantom, phantom.labelmap)
    editor = logic.openSegmentEditor(segmentation, segmentId=outputs.segmentId(MODEL, 2))
    assert editor is headless_app.scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    assert editor.GetSegmentationNode() is segmentation and editor.GetSourceVolumeNode() is volume
    assert editor.GetSelectedSegmentID() == outputs.segmentId(MODEL, 2)
    assert logic.openSegmentEditor(segmentation) is editor  # one parameter node, reused


def test_a_segmentation_file_loaded_by_slicer_uses_label_values(headless_app, tmp_path, phantom, logic):
    import slicer
    from HybridAttentionSegLib.mrml import outputs

    volume, _ = _build(headless_app, tmp_path, phantom, phantom.labelmap)
    loaded = headless_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert storage.ReadData(loaded)
    probability = headless_app.scene.GetFirstNodeByClass("vtkMRMLVectorVolumeNode")
    coreId = loaded.GetSegmentation().GetSegmentIdBySegmentName("Core")
    assert logic.probabilityChannel(loaded, coreId, probability) == 2
    shellId = loaded.GetSegmentation().GetSegmentIdBySegmentName("Shell")
    loaded.SetNodeReferenceID(outputs.INPUT_ROLE, volume.GetID())
    logic.setSegmentThreshold(loaded, coreId, probability, 0.9)
    core = slicer.util.arrayFromSegmentBinaryLabelmap(loaded, coreId, volume).transpose(2, 1, 0) > 0
    expected = threshold_segment(phantom.labelmap, phantom.probabilities, 2, 0.9) == 2
    np.testing.assert_array_equal(core, expected)
    shell = slicer.util.arrayFromSegmentBinaryLabelmap(loaded, shellId, volume).transpose(2, 1, 0) > 0
    np.testing.assert_array_equal(shell, phantom.labelmap == 1)
    # a segment added by hand with a label value another segment has gets no channel; Shell keeps its own
    handMade = loaded.GetSegmentation().AddEmptySegment("tumor", "Tumor")
    loaded.GetSegmentation().GetSegment(handMade).SetLabelValue(1)
    assert logic.probabilityChannel(loaded, handMade, probability) is None
    assert logic.probabilityChannel(loaded, shellId, probability) == 1  # by name, from the components list
