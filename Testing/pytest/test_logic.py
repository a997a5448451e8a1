"""HybridAttentionSegLogic on a real slicer-core MRML scene with the real worker process (no mocks).

A headless Slicer app loads the MNI152 template with Slicer's volumes logic; the Logic runs a tiny
random-weight Attention U-Net (real safetensors file, hash in its card) through the worker and imports
the result files.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import slicer  # noqa: E402
import vtk  # noqa: E402
from HybridAttentionSegLib import HybridAttentionSegLogic  # noqa: E402  (the package's lazy export)
from HybridAttentionSegLib.core.errors import CancelledError, UserInputError  # noqa: E402
from HybridAttentionSegLib.core.inference.io import terminology_entry  # noqa: E402
from HybridAttentionSegLib.mrml.logic import ProcessEvent  # noqa: E402
from HybridAttentionSegLib.mrml.outputs import segmentId  # noqa: E402
from HybridAttentionSegLib.worker.client import STOP_TIMEOUT_S, WorkerClient, WorkerError  # noqa: E402
from synthetic import LABELS  # noqa: E402


@pytest.fixture(scope="module")
def logic(tiny_catalog):
    """One warm Logic (and worker) for the module: re-runs reuse the resident model."""
    instance = HybridAttentionSegLogic(WorkerClient(threads=1), catalogFiles=list(tiny_catalog.values()))
    yield instance
    instance.shutdown()


@pytest.fixture
def fresh_logic(tiny_catalog):
    """A Logic with its own worker (for tests that kill it)."""
    instance = HybridAttentionSegLogic(WorkerClient(threads=1), catalogFiles=list(tiny_catalog.values()))
    yield instance
    instance.shutdown()


def _matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _slice_composites(scene):
    composites = []
    for name in ("Red", "Yellow", "Green"):
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        composites.append(composite)
    return composites


def _node_ids(scene) -> set[str]:
    nodes = scene.GetNodes()
    return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}


def _user_segmentation(scene, volume, name="Tumor", corner=(40, 50, 40)):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"user {name}")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    identifier = node.GetSegmentation().AddEmptySegment(name, name, (0.9, 0.1, 0.1))
    mask = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
    k, j, i = corner
    mask[k:k + 10, j:j + 12, i:i + 8] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, identifier, volume)
    return node, identifier, mask


def test_process_builds_segments_attention_and_table_on_the_input_grid(headless_app, logic, mni_file,
                                                                       private_tmp):
    scene = headless_app.scene
    volume = headless_app.loadVolume(mni_file, "T1")
    before = slicer.util.arrayFromVolume(volume).copy()
    composites = _slice_composites(scene)
    events = []
    display = {"opacity": 0.6, "threshold": 0.25, "colorMap": "Viridis", "showLegend": True}
    result = logic.process(volume, "tiny-gates", onEvent=lambda event, info: events.append((event, info)),
                           display=display)

    segmentation = result.segmentationNode
    assert segmentation.GetScene() is scene and segmentation.GetName().startswith("T1 ")
    segments = segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == len(LABELS)
    stats = {row["name"]: row for row in result.summary["segments"]}
    for label in LABELS:
        identifier = segmentId("tiny-gates", label["value"])
        segment = segments.GetSegment(identifier)
        assert segment.GetName() == label["name"]
        np.testing.assert_allclose(segment.GetColor(), label["color"], atol=1e-6)
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        tag = tag.get()
        assert tag == terminology_entry(label) and f"SCT^{label['terminology']['type']['code']}^" in tag
        voxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, identifier, volume).sum()
        assert voxels == stats[label["name"]]["voxels"], identifier
    # DICOM SEG export needs the reference geometry; outputs sit next to the input in the subject hierarchy
    geometry_role = segmentation.GetReferenceImageGeometryReferenceRole()
    assert segmentation.GetNodeReferenceID(geometry_role) == volume.GetID()
    hierarchy = scene.GetSubjectHierarchyNode()
    parent = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentation)) == parent

    attention = result.attentionNodes["gates"]  # the model's natural method
    assert set(result.attentionNodes) == {"gates"}
    assert np.array_equal(_matrix(attention), _matrix(volume))
    assert attention.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    heat = slicer.util.arrayFromVolume(attention)
    assert heat.dtype == np.float32 and heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > 0
    shown = attention.GetDisplayNode()
    assert shown.GetColorNode().GetName() == "Viridis"
    assert shown.GetApplyThreshold() and shown.GetLowerThreshold() == pytest.approx(0.25)
    assert (shown.GetWindowLevelMin(), shown.GetWindowLevelMax()) == (0.0, 1.0)
    for composite in composites:
        assert composite.GetForegroundVolumeID() == attention.GetID()
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.6)
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(attention)
    assert legend is not None and legend.GetVisibility()

    probabilities = result.probabilitiesNode
    assert probabilities.GetImageData().GetNumberOfScalarComponents() == 3
    assert np.array_equal(_matrix(probabilities), _matrix(volume))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(probabilities).sum(-1), 1.0, atol=1e-4)
    table = result.tableNode
    assert table.GetNumberOfRows() == len(LABELS)
    assert [table.GetColumnName(i) for i in range(4)] == ["Segment", "Label value", "Voxels", "Volume [mL]"]
    assert table.GetCellText(0, 0) == "Gray matter"

    kinds = [event for event, _ in events]
    assert kinds[0] == ProcessEvent.STARTED and kinds[-1] == ProcessEvent.FINISHED
    assert kinds[-2] == ProcessEvent.IMPORTING and ProcessEvent.PROGRESS in kinds
    percents = [info["percent"] for event, info in events if event == ProcessEvent.PROGRESS
                and info["stage"] == "inference"]
    assert percents == sorted(percents) and percents[-1] == 100
    assert np.array_equal(slicer.util.arrayFromVolume(volume), before), "the input must not change"
    assert list(private_tmp.iterdir()) == [], "the private temp folder must be removed after success"


def test_user_segments_are_never_lost_and_reruns_update_in_place(headless_app, logic, mni_file):
    scene = headless_app.scene
    volume = headless_app.loadVolume(mni_file, "T1")
    user, tumor, mask = _user_segmentation(scene, volume)
    other, _, _ = _user_segmentation(scene, volume, name="Other", corner=(10, 10, 10))

    first = logic.process(volume, "tiny-gates", outputSegmentation=user)
    assert first.segmentationNode is user
    assert set(first.newSegmentIds) == {segmentId("tiny-gates", label["value"]) for label in LABELS}
    segments = user.GetSegmentation()
    assert segments.GetNumberOfSegments() == 1 + len(LABELS)
    assert segments.GetSegment(tumor).GetName() == "Tumor"
    np.testing.assert_allclose(segments.GetSegment(tumor).GetColor(), (0.9, 0.1, 0.1))
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(user, tumor, volume), mask)
    assert other.GetSegmentation().GetNumberOfSegments() == 1, "a segmentation not passed in is not touched"

    second = logic.process(volume, "tiny-gates", outputSegmentation=user,
                           attentionMethods=["gates", "grad-cam"])
    assert second.summary["reused_model"] is True, "the worker keeps the model resident between runs"
    assert second.summary["worker_pid"] == first.summary["worker_pid"]
    assert second.newSegmentIds == [] and segments.GetNumberOfSegments() == 1 + len(LABELS)
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(user, tumor, volume), mask)
    assert second.attentionNodes["gates"] is first.attentionNodes["gates"], "re-runs update the same node"
    assert set(second.attentionNodes) == {"gates", "grad-cam"}

    third = logic.process(volume, "tiny-gates")  # default: a new segmentation node
    assert third.segmentationNode is not user and third.segmentationNode.GetID() != user.GetID()


def test_user_errors_raise_and_leave_no_trace(headless_app, logic, mni_file, private_tmp):
    scene = headless_app.scene
    volume = headless_app.loadVolume(mni_file, "T1")
    nodes = _node_ids(scene)
    with pytest.raises(UserInputError, match="unknown model 'tiny-gatez'.*did you mean"):
        logic.process(volume, "tiny-gatez")
    with pytest.raises(UserInputError, match="does not support attention method 'rollout'"):
        logic.process(volume, "tiny-gates", attentionMethods=["rollout"])
    with pytest.raises(UserInputError, match="no input volume"):
        logic.process(None, "tiny-gates")
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(UserInputError, match="scalar"):
        logic.process(labelmap, "tiny-gates")
    scene.RemoveNode(labelmap)
    assert _node_ids(scene) == nodes and list(private_tmp.iterdir()) == []
    assert not logic.isRunning


def _run_until_inference(logic, volume, model="tiny-gates-fine"):
    events = []
    task = logic.process(volume, model, waitForCompletion=False, onEvent=lambda e, i: events.append((e, i)))
    deadline = time.monotonic() + 300
    while not any(e == ProcessEvent.PROGRESS and i["stage"] == "inference" for e, i in events):
        assert time.monotonic() < deadline, "no inference progress within 300 s"
        assert not task.done, task.error
        logic.poll(0.1)
    return task, events


@pytest.mark.skipif(os.name == "nt", reason="process groups")
def test_cancel_kills_the_worker_fast_and_leaves_the_scene_as_it_was(headless_app, fresh_logic, mni_file,
                                                                     private_tmp):
    scene = headless_app.scene
    volume = headless_app.loadVolume(mni_file, "T1")
    nodes = _node_ids(scene)
    task, events = _run_until_inference(fresh_logic, volume)
    pid = fresh_logic.worker.pid
    start = time.monotonic()
    assert fresh_logic.cancel() is True
    assert time.monotonic() - start < STOP_TIMEOUT_S
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no process of the worker's group is left
    assert task.state == ProcessEvent.CANCELLED and events[-1][0] == ProcessEvent.CANCELLED
    assert not fresh_logic.isRunning
    fresh_logic.poll(0.2)  # late events of the killed worker must not resurrect anything
    assert _node_ids(scene) == nodes, "cancel must not add or change nodes"
    assert list(private_tmp.iterdir()) == []

    # blocking mode: cancelling from the event callback raises CancelledError
    def cancel_on_progress(event, info):
        if event == ProcessEvent.PROGRESS:
            fresh_logic.cancel()

    with pytest.raises(CancelledError):
        fresh_logic.process(volume, "tiny-gates-fine", onEvent=cancel_on_progress)
    assert _node_ids(scene) == nodes and list(private_tmp.iterdir()) == []

    result = fresh_logic.process(volume, "tiny-gates")  # a re-run starts a fresh worker
    assert result.summary["worker_pid"] not in (pid, None) and result.summary["reused_model"] is False


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_worker_crash_fails_the_run_without_touching_the_scene(headless_app, fresh_logic, mni_file,
                                                                 private_tmp):
    scene = headless_app.scene
    volume = headless_app.loadVolume(mni_file, "T1")
    nodes = _node_ids(scene)
    task, events = _run_until_inference(fresh_logic, volume)
    os.kill(fresh_logic.worker.pid, signal.SIGKILL)  # a crash, not a cancel
    deadline = time.monotonic() + 30
    while not task.done and time.monotonic() < deadline:
        fresh_logic.poll(0.1)
    assert task.state == ProcessEvent.FAILED and isinstance(task.error, WorkerError)
    assert "stopped unexpectedly" in str(task.error)
    assert events[-1][0] == ProcessEvent.FAILED
    assert _node_ids(scene) == nodes and list(private_tmp.iterdir()) == []


def test_display_updates_and_environment(headless_app, logic, mni_file):
    scene = headless_app.scene
    volume = headless_app.loadVolume(mni_file, "T1")
    composites = _slice_composites(scene)
    result = logic.process(volume, "tiny-gates", attentionMethods=["gates", "uncertainty"])
    segmentation = result.segmentationNode
    assert logic.updateAttentionDisplay(segmentation, "uncertainty", opacity=0.3, threshold=0.5,
                                        colorMap="Magma", showLegend=False)
    uncertainty = result.attentionNodes["uncertainty"]
    assert all(c.GetForegroundVolumeID() == uncertainty.GetID() for c in composites)
    assert composites[0].GetForegroundOpacity() == pytest.approx(0.3)
    assert uncertainty.GetDisplayNode().GetColorNode().GetName() == "Magma"
    assert uncertainty.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.5)
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(uncertainty)
    assert legend is None or not legend.GetVisibility()
    assert logic.updateAttentionDisplay(segmentation, "grad-cam") is False  # not computed: overlay hidden
    assert all(c.GetForegroundVolumeID() is None for c in composites)

    environment = logic.fetchEnvironment()
    assert logic.card("tiny-gates")["natural_method"] == "gates"
    assert environment["devices"][0]["id"] == "cpu"


def test_offscreen_views_show_the_logic_overlays(headless_app, logic, mni_file, tmp_path):
    """Axial/sagittal/coronal slice views and a 3D view of the Logic's output, drawn by Slicer's displayable
    managers (:mod:`rendering`): pixels inside the brain change when the overlays are on. PNGs go to
    ``HYBRIDSEG_SCREENSHOT_DIR`` if set (e.g. ``Resources/Screenshots``), else to the test's tmp folder;
    ``HYBRIDSEG_RENDER_MODEL`` picks a catalog model (default: the tiny random-weight one)."""
    from HybridAttentionSegLib.mrml import rendering

    out = tmp_path if not os.environ.get("HYBRIDSEG_SCREENSHOT_DIR") else \
        __import__("pathlib").Path(os.environ["HYBRIDSEG_SCREENSHOT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    app, scene = headless_app, headless_app.scene
    views = {o: rendering.OffscreenSliceView(scene, app.appLogic, rendering.SLICE_VIEW_NAMES[o], o,
                                             (256, 256))
             for o in ("Axial", "Sagittal", "Coronal")}
    three_d = rendering.OffscreenThreeDView(scene, app.appLogic, "1", (256, 256))
    try:
        volume = app.loadVolume(mni_file, "T1")
        plain = {}
        for orientation, view in views.items():
            view.setLayers(background=volume)
            view.fitToBackground()
            view.jumpToRAS((-24.0, -12.0, 14.0))
            plain[orientation] = view.capture()
        empty_3d = three_d.capture()

        model = os.environ.get("HYBRIDSEG_RENDER_MODEL", "tiny-gates")
        result = logic.process(volume, model, display={"opacity": 0.7, "threshold": 0.1}, timeout=1800)
        attention = next(iter(result.attentionNodes.values()))  # the model's natural method
        rendering.showSegmentation(result.segmentationNode, fillOpacity=0.3, outline=True, surface=True)
        for orientation, view in views.items():
            assert view.compositeNode.GetForegroundVolumeID() == attention.GetID()
            view.refreshColorLegends()
            overlay = view.capture()
            view.writePNG(out / f"logic-overlay-{orientation.lower()}.png")
            brain = plain[orientation].mean(-1) > 40  # the T1's brain in screen pixels, overlays off
            changed = np.abs(overlay.astype(int) - plain[orientation].astype(int)).sum(-1) > 30
            assert brain.sum() > 2000, orientation
            fraction = changed[brain].mean()
            assert fraction > 0.3, f"{orientation}: overlays change only {fraction:.0%} of the brain"
        three_d.resetCamera()
        surface = three_d.capture()
        three_d.writePNG(out / "logic-segmentation-3d.png")
        assert (surface.sum(-1) > 30).sum() > 2000 and (empty_3d.sum(-1) > 30).sum() == 0
        for name in ("axial", "sagittal", "coronal"):
            assert (out / f"logic-overlay-{name}.png").stat().st_size > 1000
    finally:
        for view in views.values():
            view.close()
        three_d.close()


def test_sample_data_loads_on_the_templates_grid(headless_app, logic, tiny_catalog, mni_file, tmp_path):
    """``loadSampleData`` (used by the in-Slicer self-test): the worker writes the card's sample volume,
    Slicer reads it; same grid as the template file loaded by Slicer's volumes logic."""
    import json
    from pathlib import Path

    card = json.loads(Path(tiny_catalog["tiny-gates"]).read_text(encoding="utf-8"))
    card.update(id="tiny-gates-sample", sample_data={"name": "MNI152 T1 2mm", "resolution_mm": 2,
                                                      "loader": "core.data.mni.load_template"})
    card["weights"]["file"] = str(Path(tiny_catalog["tiny-gates"]).parent / card["weights"]["file"])
    path = tmp_path / "sample-card.json"
    path.write_text(json.dumps(card))
    logic.catalogFiles.append(str(path))
    try:
        sample = logic.loadSampleData("tiny-gates-sample", headless_app.scene)
    finally:
        logic.catalogFiles.remove(str(path))
    reference = headless_app.loadVolume(mni_file, "T1")
    assert sample.GetName() == "MNI152 T1 2mm" and sample.GetScene() is headless_app.scene
    assert sample.GetImageData().GetDimensions() == reference.GetImageData().GetDimensions()
    np.testing.assert_allclose(_matrix(sample), _matrix(reference), atol=1e-5)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(sample), slicer.util.arrayFromVolume(reference),
                               atol=1e-6)


def test_bundled_models_ship_their_sample_volume(headless_app, logic, mni_file):
    """The in-Slicer self-test needs sample data without nilearn: the demo cards ship the template as NRRD."""
    from HybridAttentionSegLib.core.models.cards import get_card

    for modelId in ("mni-tissue-attention-unet", "mni-tissue-transunet"):
        card = get_card(modelId)
        assert (card.path.parent / card.data["sample_data"]["file"]).is_file()
        sample = logic.loadSampleData(modelId, headless_app.scene)
        reference = headless_app.loadVolume(mni_file, "T1")
        assert sample.GetImageData().GetDimensions() == reference.GetImageData().GetDimensions()
        np.testing.assert_allclose(_matrix(sample), _matrix(reference), atol=1e-5)
