"""``ReviewSession``: what the review app does to the MRML scene, through the Slicer module's own Logic code.

MRML only (no web framework), so it is tested under plain slicer-core without a browser. Nothing here builds
an overlay its own way:

* a case's files become nodes through :func:`..mrml.transaction.importResult` (segments, attention volumes,
  probabilities, volume table: exactly what the module does with a worker result);
* the attention display (colour map, threshold, opacity, legend) is
  :meth:`..mrml.logic.HybridAttentionSegLogic.updateAttentionDisplay`, the segmentation display
  :func:`..mrml.rendering.showSegmentation`;
* clicks, undo/redo and the uncertainty review queue are :class:`..mrml.correction.CorrectionLogic`;
* "segment on request" is the Logic's worker request, written into the served folder as a normal case.

Saving writes ``STEM.reviewed.seg.nrrd`` with Slicer's segmentation storage node, into the served folder only,
and never replaces an existing file unless the caller passes ``overwrite=True`` (the app asks first).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import slicer

from ..core.inference.io import read_segmentation_nrrd
from ..mrml import outputs, rendering, transaction
from ..mrml.logic import HybridAttentionSegLogic
from .cases import Case, case_by_id, discover_cases

logger = logging.getLogger(__name__)

#: methods that explain "the model's own attention" come before these in the method list
GENERIC_METHODS = ("grad-cam", "uncertainty")
DEFAULT_DISPLAY = {"opacity": 0.5, "threshold": 0.2, "colorMap": "Inferno", "showLegend": True}


class SaveRefused(Exception):
    """The reviewed file exists and the user has not agreed to replace it."""


def methodOrder(methods) -> list[str]:
    """The model's own methods first (gates, rollout...), then grad-cam, then uncertainty."""
    return sorted(methods, key=lambda m: (GENERIC_METHODS.index(m) + 1 if m in GENERIC_METHODS else 0, m))


def _hexColor(rgb) -> str:
    return "#" + "".join(f"{int(round(max(0.0, min(1.0, float(c))) * 255)):02x}" for c in rgb[:3])


def _restoreTags(segmentationNode, modelId: str, labels: list[dict]) -> None:
    """Put back the tags (terminology...) the ``.seg.nrrd`` carried: the import sets them from card labels."""
    for label in labels:
        segment = segmentationNode.GetSegmentation().GetSegment(outputs.segmentId(modelId, label["value"]))
        for entry in str(label.get("tags") or "").split("|"):
            key, _, value = entry.partition(":")
            if segment is not None and key and value:
                segment.SetTag(key, value)


class ReviewSession:
    """One reviewer's scene: the open case, its display, corrections and the review queue.

    Args:
        app: a :class:`..mrml.headless.HeadlessSlicer` (scene, volumes logic).
        root: the served folder (cases are read from it, reviewed files written into it).
        logic: the module Logic (default: a new one; its worker starts only when segmenting on request).
    """

    def __init__(self, app, root, logic: HybridAttentionSegLogic | None = None, catalog: list[str] | None = None):
        self.app = app
        self.scene = app.scene
        self.root = Path(root).resolve()
        self.catalog = list(catalog or [])
        self.logic = logic or HybridAttentionSegLogic(catalogFiles=self.catalog)
        self._correction = None
        self.cases: list[Case] = discover_cases(self.root)
        self.case: Case | None = None
        self.volume = None
        self.segmentation = None
        self.methods: list[str] = []
        self.method: str | None = None
        self.display = dict(DEFAULT_DISPLAY)
        self.fillOpacity, self.outline, self.surface = 0.3, True, False
        self.regionsTable = None
        self.clickMarkups = None
        self._caseNodeIds: set[str] = set()
        self._undoneClicks: list[tuple] = []

    @property
    def correction(self):
        """The :class:`..mrml.correction.CorrectionLogic` (made on first use: it imports scipy, which the first
        picture does not need)."""
        if self._correction is None:
            from ..mrml.correction import CorrectionLogic

            self._correction = CorrectionLogic()
        return self._correction

    # ------------------------------------------------------------------------------------------ cases
    def refreshCases(self) -> list[dict]:
        """Re-read the served folder; returns the case list entries."""
        self.cases = discover_cases(self.root)
        return [case.describe() for case in self.cases]

    def loadCase(self, caseId: str) -> Case:
        """Open case ``caseId`` (replacing the open one): image, segments, maps, probabilities into nodes."""
        case = case_by_id(self.cases, caseId)
        if case.problem:
            message = f"case {case.id} cannot be opened: {case.problem}"
            raise ValueError(message)
        self.closeCase()
        before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
        t0 = time.perf_counter()
        try:
            self.volume = self.app.loadVolume(case.image, case.id)
            self.volume.CreateDefaultDisplayNodes()
            _, _, labels = read_segmentation_nrrd(case.segmentation)
            modelId = case.model or case.id
            self.methods = methodOrder(case.attention)
            files = {"segmentation": str(case.segmentation)}
            files.update({f"attention-{m}": str(p) for m, p in case.attention.items()})
            if case.probabilities is not None:
                files["probabilities"] = str(case.probabilities)
            summary = {"files": files, "labels": labels, "model": modelId, "title": case.id,
                       "attention_methods": self.methods, "segments": self._segmentStats(case, labels)}
            self.method = self.methods[0] if self.methods else None
            result = transaction.importResult(self.volume, summary, attentionMethods=self.methods[:1],
                                          display=self.display)
            self.segmentation = result.segmentationNode
            _restoreTags(self.segmentation, modelId, labels)
            if not self.methods:
                self._showBackgroundOnly()
            rendering.showSegmentation(self.segmentation, self.fillOpacity, self.outline, surface=False)
            self.clickMarkups = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Review clicks")
            self.clickMarkups.CreateDefaultDisplayNodes()
            self.clickMarkups.GetDisplayNode().SetTextScale(0)
        except BaseException:
            self.closeCase(nodeIds=self._newNodeIds(before))
            raise
        self.case = case
        self._caseNodeIds = self._newNodeIds(before)
        logger.info("opened case %s in %.2f s", case.id, time.perf_counter() - t0)
        return case

    def _newNodeIds(self, before: set[str]) -> set[str]:
        ids = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())} - before
        # colour tables are shared by every case (and referenced by legends): keep them
        return {i for i in ids if not self.scene.GetNodeByID(i).IsA("vtkMRMLColorNode")}

    def closeCase(self, nodeIds: set[str] | None = None) -> None:
        """Remove the open case's nodes from the scene."""
        outputs.hideAttention(self.scene)
        for nodeId in nodeIds if nodeIds is not None else self._caseNodeIds:
            node = self.scene.GetNodeByID(nodeId)
            if node is not None:
                self.scene.RemoveNode(node)
        self.case = self.volume = self.segmentation = self.regionsTable = self.clickMarkups = None
        self.surface = False
        self.methods, self.method = [], None
        self._caseNodeIds, self._undoneClicks = set(), []

    @staticmethod
    def _segmentStats(case: Case, labels: list[dict]) -> list[dict]:
        stats = case.summary.get("segments")
        if isinstance(stats, list) and all(isinstance(s, dict) and {"name", "value", "voxels", "volume_ml"}
                                           <= set(s) for s in stats):
            return stats
        labelmap, affine, _ = read_segmentation_nrrd(case.segmentation)
        voxelMl = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
        counts = np.bincount(labelmap.ravel(), minlength=256)
        return [{"name": label["name"], "value": label["value"], "voxels": int(counts[label["value"]]),
                 "volume_ml": round(int(counts[label["value"]]) * voxelMl, 4)} for label in labels]

    def _showBackgroundOnly(self) -> None:
        nodes = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for i in range(nodes.GetNumberOfItems()):
            nodes.GetItemAsObject(i).SetBackgroundVolumeID(self.volume.GetID())

    # ------------------------------------------------------------------------------------------ display
    def setMethod(self, method: str | None) -> bool:
        """Show the map of ``method`` (None: no map) with the current display settings."""
        if self.segmentation is None:
            return False
        if method is not None and method not in self.methods:
            message = f"method {method!r} was not computed for this case; pick one of {', '.join(self.methods)}"
            raise ValueError(message)
        self.method = method
        return self.updateDisplay()

    def updateDisplay(self, **display) -> bool:
        """Change ``opacity``, ``threshold``, ``colorMap`` or ``showLegend`` of the attention overlay."""
        self.display.update({k: v for k, v in display.items() if k in DEFAULT_DISPLAY})
        if self.segmentation is None:
            return False
        if self.method is None:
            outputs.hideAttention(self.scene)
            return False
        return self.logic.updateAttentionDisplay(self.segmentation, self.method, **self.display)

    def setSegmentDisplay(self, fillOpacity: float | None = None, outline: bool | None = None,
                          surface: bool | None = None) -> None:
        """2D fill opacity (0 hides the fill), outline on/off, 3D surface on/off.

        A case opens without the 3D surface (building it takes about a second): the app turns it on after the
        first picture is on screen.
        """
        self.fillOpacity = self.fillOpacity if fillOpacity is None else float(fillOpacity)
        self.outline = self.outline if outline is None else bool(outline)
        self.surface = self.surface if surface is None else bool(surface)
        if self.segmentation is not None:
            rendering.showSegmentation(self.segmentation, self.fillOpacity, self.outline, surface=self.surface)

    def segments(self) -> list[dict]:
        """``[{"id", "name", "color", "visible"}]`` of the open segmentation."""
        if self.segmentation is None:
            return []
        segmentation, display = self.segmentation.GetSegmentation(), self.segmentation.GetDisplayNode()
        out = []
        for i in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(i)
            segment = segmentation.GetSegment(segmentId)
            out.append({"id": segmentId, "name": segment.GetName(), "color": _hexColor(segment.GetColor()),
                        "visible": bool(display.GetSegmentVisibility(segmentId))})
        return out

    def setSegmentVisible(self, segmentId: str, visible: bool) -> None:
        if self.segmentation is None or self.segmentation.GetSegmentation().GetSegment(segmentId) is None:
            message = f"no segment {segmentId!r} in the open case"
            raise ValueError(message)
        self.segmentation.GetDisplayNode().SetSegmentVisibility(segmentId, bool(visible))

    # ------------------------------------------------------------------------------------------ correct
    def click(self, ras, label: str) -> int:
        """Correct at RAS ``ras``: "this is segment ``label``" (a name) or ``background``; returns voxels changed.

        One click is one undo step (a click that changes nothing adds none).
        """
        if self.segmentation is None:
            message = "no case is open; open a case before clicking"
            raise ValueError(message)
        from ..mrml.correction import CorrectionLogic

        temporary = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "click")
        try:
            CorrectionLogic.addClick(temporary, ras, label)
            report = self.correction.applyClicks(temporary, self.segmentation, self.volume)
        finally:
            self.scene.RemoveNode(temporary)
        changed = int(sum(entry.get("changed", 0) for entry in report))
        if changed:
            CorrectionLogic.addClick(self.clickMarkups, ras, label)
            self._undoneClicks = []
        return changed

    def undo(self) -> bool:
        if self.segmentation is None or not self.correction.undo(self.segmentation):
            return False
        self._redisplay()
        count = self.clickMarkups.GetNumberOfControlPoints()
        if count:
            position = [0.0, 0.0, 0.0]
            self.clickMarkups.GetNthControlPointPositionWorld(count - 1, position)
            self._undoneClicks.append((position, self.clickMarkups.GetNthControlPointLabel(count - 1)))
            self.clickMarkups.RemoveNthControlPoint(count - 1)
        return True

    def redo(self) -> bool:
        if self.segmentation is None or not self.correction.redo(self.segmentation):
            return False
        self._redisplay()
        if self._undoneClicks:
            from ..mrml.correction import CorrectionLogic

            position, label = self._undoneClicks.pop()
            CorrectionLogic.addClick(self.clickMarkups, position, label)
        return True

    def _redisplay(self) -> None:
        # with a closed-surface representation present, a restored history state leaves the 2D displayable
        # manager showing the old fill (slicer-core 5.11 and 5.13 alike) until the display node is modified
        self.segmentation.GetDisplayNode().Modified()

    def canUndo(self) -> bool:
        # no correction logic yet: no click has been made, nothing to undo (and no need to import scipy)
        return (self.segmentation is not None and self._correction is not None
                and self._correction.canUndo(self.segmentation))

    def canRedo(self) -> bool:
        return self.segmentation is not None and bool(self._undoneClicks)

    def voxelCounts(self) -> dict:
        """``{segment name: voxels}`` of the open segmentation (what a click changes)."""
        from ..mrml import correction_masks as cm

        return {s["name"]: int(np.count_nonzero(cm.segmentMask(self.segmentation, s["id"], self.volume)))
                for s in self.segments()}

    # ------------------------------------------------------------------------------------------ review queue
    def findRegions(self, threshold: float = 0.5, maxRegions: int = 50) -> list[dict]:
        """Rank the uncertain regions (the module's review table); returns them as rows."""
        if self.segmentation is None:
            return []
        if self.regionsTable is not None:
            self.scene.RemoveNode(self.regionsTable)
        self.regionsTable = self.correction.uncertainRegionsTable(self.segmentation, threshold=threshold,
                                                                  maxRegions=maxRegions)
        self._caseNodeIds.add(self.regionsTable.GetID())
        return self.regionRows()

    def regionRows(self) -> list[dict]:
        """The review table's rows as ``{column: text}`` (empty before :meth:`findRegions`)."""
        if self.regionsTable is None:
            return []
        table = self.regionsTable.GetTable()
        names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
        return [{name: table.GetValue(row, c).ToString() for c, name in enumerate(names)}
                for row in range(table.GetNumberOfRows())]

    def nextRegion(self) -> int | None:
        """Centre the views on the next uncertain region (finding them first); returns its row."""
        if self.regionsTable is None:
            self.findRegions()
        return None if self.regionsTable is None else self.correction.nextRegion(self.regionsTable)

    # ------------------------------------------------------------------------------------------ segment
    def segmentInput(self, inputPath, modelId: str, onDone=None) -> str | None:
        """Segment ``inputPath`` (given on the command line) into the served folder as case ``STEM``.

        The Logic's worker writes ``STEM.seg.nrrd``, the model's own map, ``uncertainty`` and the probabilities
        into the served folder, so the result is a case like any other; a display copy of the image is written
        as ``STEM.nrrd`` unless that file exists. If case ``STEM`` exists already it is not computed again
        (nothing is overwritten): returns None, else the worker request id; ``onDone(data, error)`` is called
        from ``self.logic.poll()``.
        """
        from ..core.inference.io import read_volume, stem_of, write_scalar_nrrd
        from ..core.models.cards import get_card

        card = get_card(modelId, self.catalog)
        stem = stem_of(inputPath)
        if (self.root / f"{stem}.seg.nrrd").exists():
            return None
        image = self.root / f"{stem}.nrrd"
        if not image.exists():
            volume = read_volume(inputPath)
            write_scalar_nrrd(image, volume.data[0], volume.affine)
        from ..core.models.offers import natural_method

        methods = [m for m in [natural_method(card)] if m]  # the first map the card ships (never a withheld one)
        if "uncertainty" in card.attention_methods and "uncertainty" not in methods:
            methods.append("uncertainty")
        fields = {"model": card.id, "input": str(Path(inputPath).resolve()), "out_dir": str(self.root),
                  "stem": stem, "attention": methods, "probabilities": True}
        return self.logic.request("segment", fields, onDone=onDone, waitForCompletion=False)

    # ------------------------------------------------------------------------------------------ save
    def reviewedPath(self) -> Path:
        return self.root / f"{self.case.id}.reviewed.seg.nrrd"

    def save(self, overwrite: bool = False) -> Path:
        """Write the corrected segmentation to ``STEM.reviewed.seg.nrrd`` in the served folder.

        Raises:
            SaveRefused: the file exists and ``overwrite`` is False.
        """
        if self.segmentation is None:
            message = "no case is open; nothing to save"
            raise ValueError(message)
        target = self.reviewedPath()
        if target.exists() and not overwrite:
            message = f"{target.name} exists; confirm to replace it"
            raise SaveRefused(message)
        temporary = target.with_name(f".{self.case.id}.{os.getpid()}.tmp.seg.nrrd")
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(temporary))
        try:
            if not storage.WriteData(self.segmentation):
                message = f"writing {target.name} failed; check free disk space and permissions"
                raise RuntimeError(message)
            os.replace(temporary, target)  # atomic: a reader never sees half a file
        finally:
            temporary.unlink(missing_ok=True)
        logger.info("saved %s", target)
        return target
