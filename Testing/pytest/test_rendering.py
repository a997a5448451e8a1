"""Offscreen rendering through Slicer's displayable managers (real slicer-core scene, real EGL rendering).

The overlays are checked on pixels: inside the brain, a render with the segmentation or the heat map must
differ from the render of the T1 alone, and a heat map entirely below its threshold must not show at all.
"""

from __future__ import annotations

import numpy as np
import pytest
from HybridAttentionSegLib.core.data import mni  # noqa: E402
from HybridAttentionSegLib.core.inference.io import write_scalar_nrrd, write_segmentation_nrrd  # noqa: E402
from HybridAttentionSegLib.mrml import rendering  # noqa: E402

SIZE = 256
FOCUS = (-24.0, -12.0, 14.0)


@pytest.fixture
def brain_scene(headless_app, tmp_path):
    """The 2 mm template, its tissue segmentation and a Gaussian 'attention' blob, loaded as MRML nodes."""
    volume = mni.load_template(2)
    t1_path = write_scalar_nrrd(tmp_path / "t1.nrrd", volume.data[0], volume.affine)
    seg_path = write_segmentation_nrrd(tmp_path / "tissue.seg.nrrd", mni.tissue_labels(2), volume.affine,
                                       list(mni.TISSUE_LABELS))
    i, j, k = np.indices(volume.shape)
    centre = np.linalg.solve(volume.affine, [*FOCUS, 1.0])[:3]
    blob = np.exp(-((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2) / (2 * 8.0 ** 2))
    heat_path = write_scalar_nrrd(tmp_path / "heat.nrrd", blob.astype(np.float32), volume.affine)
    low_path = write_scalar_nrrd(tmp_path / "low.nrrd", np.full(volume.shape, 0.1, np.float32), volume.affine)
    app = headless_app
    nodes = {
        "t1": app.loadVolume(t1_path, "T1"),
        "heat": app.loadVolume(heat_path, "heat"),
        "low": app.loadVolume(low_path, "low"),
        "seg": app.segmentationsLogic.LoadSegmentationFromFile(str(seg_path), False),
    }
    assert nodes["seg"] is not None and nodes["seg"].GetSegmentation().GetNumberOfSegments() == 2
    colors = rendering.addPerceptualColorTable(app.scene, "Inferno")
    rendering.showHeatMap(nodes["heat"], colors, lowerThreshold=0.2)
    rendering.showHeatMap(nodes["low"], colors, lowerThreshold=0.2)
    rendering.showSegmentation(nodes["seg"], fillOpacity=0.4, outline=True)
    nodes["seg"].GetDisplayNode().SetVisibility(False)
    return app, nodes


def _view(app, orientation, background):
    view = rendering.OffscreenSliceView(app.scene, app.appLogic, rendering.SLICE_VIEW_NAMES[orientation],
                                        orientation, (SIZE, SIZE))
    view.setLayers(background=background)
    view.fitToBackground()
    view.jumpToRAS(FOCUS)
    return view


def _brain_pixels(plain: np.ndarray) -> np.ndarray:
    """Pixels showing brain in a render of the T1 alone (grey, clearly brighter than the black background)."""
    return plain.astype(int).mean(axis=2) > 40


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 12


def test_perceptual_color_table_is_inferno_and_reused(headless_app):
    scene = headless_app.scene
    table = rendering.addPerceptualColorTable(scene, "Inferno")
    assert table.GetNumberOfColors() == 256
    first, last = [0.0] * 4, [0.0] * 4
    table.GetColor(0, first)
    table.GetColor(255, last)
    assert sum(first[:3]) < 0.1  # inferno starts near black ...
    assert last[0] > 0.9 and last[1] > 0.9 and last[2] < 0.7  # ... and ends pale yellow
    assert rendering.addPerceptualColorTable(scene, "Inferno") is table


@pytest.mark.parametrize("orientation", ["Axial", "Sagittal", "Coronal"])
def test_overlays_change_brain_pixels(brain_scene, orientation):
    app, nodes = brain_scene
    view = _view(app, orientation, nodes["t1"])
    try:
        plain = view.capture()
        brain = _brain_pixels(plain)
        assert brain.sum() > 0.1 * SIZE * SIZE, "the T1 should fill a good part of the view"
        # the T1 alone is grey: no colour anywhere
        assert np.abs(plain.astype(int) - plain.astype(int).mean(axis=2, keepdims=True)).max() <= 2

        nodes["seg"].GetDisplayNode().SetVisibility(True)
        with_segmentation = view.capture()
        assert _changed(plain, with_segmentation)[brain].mean() > 0.5, "segmentation fill should tint the brain"

        nodes["seg"].GetDisplayNode().SetVisibility(False)
        view.setLayers(background=nodes["t1"], foreground=nodes["heat"], foregroundOpacity=0.6)
        with_heat = view.capture()
        changed = _changed(plain, with_heat) & brain
        assert changed.sum() > 300, "the heat map blob should show inside the brain"
        assert changed.mean() < 0.5 * brain.mean(), "values under the threshold must stay transparent"

        view.setLayers(background=nodes["t1"], foreground=nodes["low"], foregroundOpacity=0.6)
        below_threshold = view.capture()
        assert not _changed(plain, below_threshold)[brain].any(), "a map below threshold must not show"
    finally:
        view.close()


@pytest.mark.parametrize("orientation", ["Axial", "Sagittal", "Coronal"])
def test_jump_puts_plane_through_point(brain_scene, orientation):
    app, nodes = brain_scene
    view = _view(app, orientation, nodes["t1"])
    try:
        slice_to_ras = np.array([[view.sliceNode.GetSliceToRAS().GetElement(r, c) for c in range(4)]
                                 for r in range(4)])
        normal, origin = slice_to_ras[:3, 2], slice_to_ras[:3, 3]
        # within half a 2 mm voxel (the slice snaps to voxel planes)
        assert abs(float(np.dot(normal, np.array(FOCUS) - origin))) <= 1.0 + 1e-6
    finally:
        view.close()


def test_color_legend_is_drawn_by_slicer(brain_scene):
    app, nodes = brain_scene
    view = _view(app, "Axial", nodes["t1"])
    try:
        view.setLayers(background=nodes["t1"], foreground=nodes["heat"], foregroundOpacity=0.6)
        without = view.capture()
        legend = rendering.addColorLegend(nodes["heat"], "attention")
        assert legend.IsA("vtkMRMLColorLegendDisplayNode")
        with_legend = view.capture()
        right = np.zeros((SIZE, SIZE), bool)
        right[:, int(SIZE * 0.85):] = True
        assert _changed(without, with_legend)[right].sum() > 100, "the legend bar should appear on the right"
        # the bar shows the colour map: a bright yellow-ish top and dark bottom in the legend strip
        strip = with_legend[:, int(SIZE * 0.85):].astype(int)
        assert (strip[..., 0] - strip[..., 2]).max() > 100, "legend colours should be inferno (red >> blue)"
        legend.SetVisibility(False)
        assert not _changed(without, view.capture())[right].any()
    finally:
        view.close()


def test_legend_created_before_the_view_is_shown(brain_scene):
    app, nodes = brain_scene
    rendering.addColorLegend(nodes["heat"], "attention")
    view = _view(app, "Axial", nodes["t1"])
    try:
        plain = view.capture()
        view.setLayers(background=nodes["t1"], foreground=nodes["heat"], foregroundOpacity=0.6)
        shown = view.capture()
        right = np.zeros((SIZE, SIZE), bool)
        right[:, int(SIZE * 0.85):] = True
        assert _changed(plain, shown)[right].sum() > 100
    finally:
        view.close()


def test_three_d_view_shows_segmentation_surface(brain_scene, tmp_path):
    from PIL import Image

    app, nodes = brain_scene
    view = rendering.OffscreenThreeDView(app.scene, app.appLogic, size=(SIZE, SIZE))
    try:
        empty = view.capture()
        rendering.showSegmentation(nodes["seg"], fillOpacity=0.4, outline=True, surface=True)
        view.resetCamera()
        path = view.writePNG(tmp_path / "three_d.png")
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape == (SIZE, SIZE, 3)
        lit = pixels.astype(int).max(axis=2) > 30
        assert lit.mean() > 0.1, "the surface should cover a good part of the 3D view"
        assert lit.mean() < 0.95
        assert not (empty.astype(int).max(axis=2) > 30).any(), "nothing is drawn before the surface is shown"
    finally:
        view.close()


def test_views_leave_no_nodes_and_do_not_touch_application_views(headless_app):
    """Offscreen views use their own slice/composite nodes (not "Red"...) and remove what they added."""
    scene = headless_app.scene
    slice_logics = headless_app.appLogic.GetSliceLogics()
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    slice_view = rendering.OffscreenSliceView(scene, headless_app.appLogic, orientation="Sagittal")
    three_d = rendering.OffscreenThreeDView(scene, headless_app.appLogic)
    assert slice_view.sliceNode.GetLayoutName() not in ("Red", "Yellow", "Green")
    assert three_d.viewNode.GetLayoutName() != "1"
    assert slice_view.sliceNode.GetOrientation() == "Sagittal"
    assert slice_logics.GetNumberOfItems() == 1
    slice_view.close()
    three_d.close()
    after = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    assert after == before
    assert slice_logics.GetNumberOfItems() == 0
