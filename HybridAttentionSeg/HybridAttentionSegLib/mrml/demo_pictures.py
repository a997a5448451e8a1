"""The demo's pictures: Slicer slice and 3D views of each model's result files, drawn offscreen.

This is the render side of the demo. It runs in its own process, which never imports torch (see
:mod:`.demo_render`):

    python -m HybridAttentionSegLib.mrml.demo_pictures INPUT OUT_DIR SIZE

The child builds the scene, the views and the input's background layer once. It then reads one JSON line per
model from stdin (``{"id", "methods", "files"}``, as soon as the parent has written that model's results) and
answers with one JSON line on stdout (``{"id", "pictures"}``). It stops at the end of stdin. So the pictures of
one model are drawn while the parent segments the next one.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np

ORIENTATIONS = ("Axial", "Sagittal", "Coronal")
#: RAS point (mm) the three slice views pass through: left insula / basal ganglia level of the MNI template
FOCUS_RAS = (-24.0, -12.0, 14.0)
VIEW_SIZE = 384
#: slice-view segment colours used in the pictures only (the card's pale tissue colours vanish on a T1);
#: the .seg.nrrd files keep the card's colours
PICTURE_SEGMENT_COLORS = ((0.10, 0.80, 1.00), (0.20, 1.00, 0.30), (1.00, 0.35, 0.85), (1.00, 0.60, 0.10))
HEAT_OPACITY = 0.6
HEAT_THRESHOLD = 0.2
#: segmentation fill opacity: segmentation pictures / under a heat map (lighter, so the heat map stays readable)
FILL_OPACITY = 0.35
FILL_OPACITY_UNDER_HEAT = 0.12
#: input intensity above which a voxel counts as foreground when framing the 3D view (the template's brain mask)
BRAIN_THRESHOLD = 0.2


def _style_segmentation(segmentation_node) -> None:
    from . import rendering

    rendering.showSegmentation(segmentation_node, fillOpacity=FILL_OPACITY, outline=True, surface=True)
    display = segmentation_node.GetDisplayNode()
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    for i, segment_id in enumerate(ids):
        display.SetSegmentOverrideColor(segment_id, *PICTURE_SEGMENT_COLORS[i % len(PICTURE_SEGMENT_COLORS)])
        # outer structures translucent in 3D so inner ones show (tissue: grey matter around white matter)
        display.SetSegmentOpacity3D(segment_id, 0.35 if i < len(ids) - 1 else 1.0)


def _foreground_bounds(volume_node, threshold: float) -> list[float] | None:
    """RAS bounding box (xmin, xmax, ...) of the voxels above ``threshold``: one 3D framing for every model."""
    import slicer
    import vtk

    array = slicer.util.arrayFromVolume(volume_node)  # (K, J, I)
    kji = np.argwhere(array > threshold)
    if not len(kji):
        return None  # nothing above threshold: frame whatever is visible
    lo, hi = kji.min(0)[::-1], kji.max(0)[::-1]  # (I, J, K)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    affine = slicer.util.arrayFromVTKMatrix(matrix)
    corners = np.array([[i, j, k, 1.0] for i in (lo[0], hi[0]) for j in (lo[1], hi[1]) for k in (lo[2], hi[2])])
    ras = corners @ affine.T
    return [v for axis in range(3) for v in (ras[:, axis].min(), ras[:, axis].max())]


class PictureRenderer:
    """One headless scene with three slice views and a 3D view over the input; :meth:`render` draws one model.

    Args:
        input_path: the input volume (the background layer of every picture).
        out_dir: where the PNGs go.
        size: view size in pixels.
        focus_ras: RAS point the slice views pass through.
    """

    def __init__(self, input_path: Path, out_dir: Path, size: int = VIEW_SIZE, focus_ras=FOCUS_RAS):
        from . import rendering
        from .headless import HeadlessSlicer

        self.out_dir = Path(out_dir)
        self.app = HeadlessSlicer()
        scene = self.app.scene
        self.views = {o: rendering.OffscreenSliceView(scene, self.app.appLogic, rendering.SLICE_VIEW_NAMES[o], o,
                                                      (size, size)) for o in ORIENTATIONS}
        self.three_d = rendering.OffscreenThreeDView(scene, self.app.appLogic, size=(size, size))
        try:
            self.background = self.app.loadVolume(input_path, "T1")
            self.color_table = rendering.addPerceptualColorTable(scene, "Inferno")
            self.bounds = _foreground_bounds(self.background, BRAIN_THRESHOLD)
            for view in self.views.values():
                view.setLayers(background=self.background)
                view.fitToBackground()
                view.jumpToRAS(focus_ras)
        except Exception:
            self.close()
            raise

    def render(self, stem: str, methods: list[str], files: dict[str, str]) -> dict[str, str]:
        """Segmentation (3 views), each method's heat map (3 views) and the 3D surfaces of one model.

        Returns:
            ``{"segmentation.axial": path, "METHOD.VIEW": path, ..., "3d": path}``.
        """
        from . import rendering

        app, scene, views, pictures = self.app, self.app.scene, self.views, {}
        segmentation = app.segmentationsLogic.LoadSegmentationFromFile(files["segmentation"], False)
        if segmentation is None:
            message = f"Slicer could not load {files['segmentation']}"
            raise RuntimeError(message)
        added = [segmentation]
        try:
            _style_segmentation(segmentation)
            for orientation, view in views.items():
                view.setLayers(background=self.background)
                pictures[f"segmentation.{orientation.lower()}"] = view.writePNG(
                    self.out_dir / f"{stem}.segmentation.{orientation.lower()}.png")
            segmentation.GetDisplayNode().SetOpacity2DFill(FILL_OPACITY_UNDER_HEAT)
            for method in methods:
                heat = app.loadVolume(files[f"attention-{method}"], f"{stem} {method}")
                added.append(heat)
                rendering.showHeatMap(heat, self.color_table, lowerThreshold=HEAT_THRESHOLD)
                added.append(rendering.addColorLegend(heat, method))
                for orientation, view in views.items():
                    view.setLayers(background=self.background, foreground=heat, foregroundOpacity=HEAT_OPACITY)
                    pictures[f"{method}.{orientation.lower()}"] = view.writePNG(
                        self.out_dir / f"{stem}.{method}.{orientation.lower()}.png")
            self.three_d.resetCamera(bounds=self.bounds)
            pictures["3d"] = self.three_d.writePNG(self.out_dir / f"{stem}.3d.png")
        finally:
            for view in views.values():
                view.setLayers(background=self.background)
            for node in reversed(added):
                if node.GetScene() is not None:
                    scene.RemoveNode(node)
        return pictures

    def close(self) -> None:
        """Release the views and clear the scene."""
        for view in self.views.values():
            view.close()
        self.three_d.close()
        self.app.scene.Clear(True)


def serve(input_path: str, out_dir: str, size: int, requests, replies) -> int:
    """The child's loop: one request line in, one reply line out, until the requests end. Returns the count."""
    renderer = PictureRenderer(Path(input_path), Path(out_dir), size)
    count = 0
    try:
        for line in requests:
            if not line.strip():
                continue
            run = json.loads(line)
            pictures = renderer.render(run["id"], run["methods"], run["files"])
            replies.write(json.dumps({"id": run["id"], "pictures": pictures}) + "\n")
            replies.flush()
            count += 1
    finally:
        renderer.close()
    if "torch" in sys.modules:
        raise RuntimeError("the demo's render process imported torch; rendering must stay free of torch")
    return count


def main(argv: list[str]) -> int:
    """Entry point of the render child (``python -m HybridAttentionSegLib.mrml.demo_pictures``)."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    input_path, out_dir, size = argv[0], argv[1], int(argv[2])
    # The replies get their own descriptor; fd 1 becomes stderr, so nothing that VTK or a library prints can
    # corrupt the JSON-lines channel.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    requests = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    serve(input_path, out_dir, size, requests, replies)
    replies.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
