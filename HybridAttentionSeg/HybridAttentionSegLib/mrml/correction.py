"""``CorrectionLogic``: fixing a segmentation node after inference, and reviewing where the model is unsure.

MRML only (no Qt), so it works in Slicer and under plain ``slicer-core``. The rules themselves live in
:mod:`.core.refine` and :mod:`.core.review`; this class moves arrays between nodes and those functions:

* :meth:`setSegmentThreshold` re-derives one segment from the kept probability map (a slider);
* :meth:`applyClicks` replays the control points of a markups point list ("this point is segment X" /
  "background", from each point's label) on the segmentation;
* :meth:`uncertainRegionsTable` lists uncertain regions in a table node; :meth:`jumpToRegion` /
  :meth:`nextRegion` centre the slice views on one;
* :meth:`openSegmentEditor` sets the Segment Editor's parameter node (segmentation, source volume, segment);
  the module switch itself (``slicer.util.selectModule("SegmentEditor")``) is the Widget's job.

**Undo.** Every correction first saves the segmentation's state in a ``vtkSegmentationHistory`` kept per
segmentation node (the class Slicer's Segment Editor uses for its own undo; it is part of vtkSegmentationCore
and works headless, unlike the scene's ``SaveStateForUndo``, which needs the application's undo stack switched
on and copies whole nodes). :meth:`undo` / :meth:`redo` restore those states. A threshold drag (many calls on
one segment with nothing else in between) is one undo step.

**Which probability belongs to a segment.** Channel ``v`` holds label value ``v``. A segment's value is the
suffix of the IDs the Logic gives (``HybridAttentionSeg_<model>_<v>``), else the value listed for its name in
the probability node's ``HybridAttentionSeg.Components`` attribute, else the segment's label value if no other
segment has it. Segments without a channel (added by hand) get no probability rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from ..core.correction import refine, review
from ..core.inference.volume import spacing_of
from . import correction_masks as cm
from . import outputs

logger = logging.getLogger(__name__)

BACKGROUND_LABELS = ("background", "bg")
CLICK_LABEL_ATTRIBUTE = outputs.ROLE_PREFIX + "ClickLabel"
REGION_ATTRIBUTE = outputs.ROLE_PREFIX + "CurrentRegion"
SEGMENTATION_ROLE = outputs.ROLE_PREFIX + "reviewedSegmentation"


@dataclass
class _ClickState:
    base: np.ndarray  # internal labelmap the clicks are replayed on
    result: np.ndarray  # what the last replay wrote
    segmentIds: list


class CorrectionLogic:
    """Threshold, click and review corrections on segmentation nodes (see the module docstring)."""

    #: undo states kept per segmentation node
    UNDO_STATES = 20
    #: thresholds at or above this only touch the box where the probability reaches it (faster slider)
    THRESHOLD_FLOOR = 0.01

    def __init__(self):
        self._histories: dict[str, object] = {}
        self._thresholdSession: dict[str, tuple] = {}
        self._clickStates: dict[tuple, _ClickState] = {}

    # ------------------------------------------------------------------------------------------ inputs
    @staticmethod
    def probabilityNode(segmentationNode):
        """The probability volume the Logic stored with this segmentation (None if not kept)."""
        return segmentationNode.GetNodeReference(outputs.PROBABILITIES_ROLE)

    @staticmethod
    def sourceVolumeNode(segmentationNode):
        """The volume this segmentation was computed from (the Logic's reference, else the geometry)."""
        node = segmentationNode.GetNodeReference(outputs.INPUT_ROLE)
        if node is None:
            node = segmentationNode.GetNodeReference(
                slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
        return node

    @staticmethod
    def uncertaintyNode(segmentationNode):
        """The ``uncertainty`` attention map of this segmentation (None if it was not computed)."""
        return segmentationNode.GetNodeReference(outputs.ATTENTION_ROLE + "uncertainty")

    def probabilityChannel(self, segmentationNode, segmentId: str, probabilityVolumeNode) -> int | None:
        """Channel of ``probabilityVolumeNode`` that holds ``segmentId`` (module docstring), or None."""
        channels = cm.componentCount(probabilityVolumeNode)
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            message = (f"segment {segmentId!r} is not in {segmentationNode.GetName()}; "
                       "pick one of its segments")
            raise ValueError(message)
        candidates = []
        suffix = segmentId.rsplit("_", 1)[-1]
        if segmentId.startswith(outputs.ROLE_PREFIX.rstrip(".") + "_") and suffix.isdigit():
            candidates.append(int(suffix))
        components = (probabilityVolumeNode.GetAttribute(outputs.ROLE_PREFIX + "Components") or "").split("|")
        for entry in components[1:]:
            value, _, name = entry.partition(":")
            if name.lower() == segment.GetName().lower() and value.isdigit():
                candidates.append(int(value))
        segmentation = segmentationNode.GetSegmentation()
        values = [segmentation.GetSegment(s).GetLabelValue() for s in cm.listSegmentIds(segmentationNode)]
        if values.count(segment.GetLabelValue()) == 1:  # a label value shared by segments names no channel
            candidates.append(int(segment.GetLabelValue()))
        return next((c for c in candidates if 1 <= c < channels), None)

    # ------------------------------------------------------------------------------------------ undo
    def saveStateForUndo(self, segmentationNode) -> None:
        """Remember the segmentation's current state (before a correction)."""
        self._history(segmentationNode).SaveState()

    def canUndo(self, segmentationNode) -> bool:
        """True when :meth:`undo` has a state to go back to."""
        return bool(self._history(segmentationNode).IsRestorePreviousStateAvailable())

    def undo(self, segmentationNode) -> bool:
        """Restore the state before this module's last correction; False if there is none."""
        history = self._history(segmentationNode)
        if not history.IsRestorePreviousStateAvailable():
            return False
        self._forgetSessions(segmentationNode)
        return bool(history.RestorePreviousState())

    def redo(self, segmentationNode) -> bool:
        """Re-apply the correction :meth:`undo` took back; False if there is none."""
        history = self._history(segmentationNode)
        if not history.IsRestoreNextStateAvailable():
            return False
        self._forgetSessions(segmentationNode)
        return bool(history.RestoreNextState())

    def _history(self, segmentationNode):
        key = segmentationNode.GetID()
        history = self._histories.get(key)
        if history is None or history.GetSegmentation() is not segmentationNode.GetSegmentation():
            history = slicer.vtkSegmentationHistory()
            history.SetMaximumNumberOfStates(self.UNDO_STATES)
            history.SetSegmentation(segmentationNode.GetSegmentation())
            self._histories[key] = history
        return history

    def _forgetSessions(self, segmentationNode) -> None:
        key = segmentationNode.GetID()
        self._thresholdSession.pop(key, None)
        for stateKey in [k for k in self._clickStates if k[0] == key]:
            del self._clickStates[stateKey]

    # ------------------------------------------------------------------------------------------ threshold
    def setSegmentThreshold(self, segmentationNode, segmentId: str, probabilityVolumeNode, threshold: float,
                            referenceVolumeNode=None) -> int:
        """Re-derive ``segmentId`` as ``probability >= threshold`` where no other segment is; return its size.

        Consecutive calls on the same segment (a slider drag) share one undo step.
        """
        probabilityVolumeNode = probabilityVolumeNode or self.probabilityNode(segmentationNode)
        reference = referenceVolumeNode or self.sourceVolumeNode(segmentationNode) or probabilityVolumeNode
        if probabilityVolumeNode is None:
            message = (f"{segmentationNode.GetName()} has no probability map; re-run the segmentation with "
                       "probabilities kept")
            raise ValueError(message)
        cm.checkSameGrid(probabilityVolumeNode, reference)
        channel = self.probabilityChannel(segmentationNode, segmentId, probabilityVolumeNode)
        if channel is None:
            message = (f"segment {segmentId!r} has no channel in {probabilityVolumeNode.GetName()}; "
                       "threshold a segment the model produced")
            raise ValueError(message)
        key = segmentationNode.GetID()
        session = (segmentId, probabilityVolumeNode.GetID(), reference.GetID())
        probability = cm.channelArray(probabilityVolumeNode, channel)  # (K, J, I) view
        previous = self._thresholdSession.get(key)
        if previous is None or previous[0] != session or previous[1] != cm.contentTime(segmentationNode):
            self.saveStateForUndo(segmentationNode)
            taken, box = self._thresholdRegion(segmentationNode, segmentId, reference, probability)
        else:
            taken, box = previous[2], previous[3]
        region = box if threshold >= self.THRESHOLD_FLOOR else (slice(None),) * 3
        mask = refine.threshold_segment(taken[region], probability[region], 1, float(threshold)) == 1
        cm.writeSegmentMask(segmentationNode, segmentId, reference, mask, region)
        self._thresholdSession[key] = (session, cm.contentTime(segmentationNode), taken, box)
        return int(np.count_nonzero(mask))

    # ------------------------------------------------------------------------------------------ clicks
    @staticmethod
    def addClick(markupsNode, ras, label: str) -> int:
        """Add a control point at RAS ``ras`` saying it is in segment ``label`` (name) or ``background``."""
        index = markupsNode.AddControlPointWorld(vtk.vtkVector3d(*[float(x) for x in ras]), str(label))
        return int(index)

    def clicksFromMarkups(self, markupsNode, segmentationNode, referenceVolumeNode) -> list:
        """The control points as :class:`~.core.refine.Click` (value: segment index + 1; 0: background)."""
        segmentIds = cm.listSegmentIds(segmentationNode)
        segmentation = segmentationNode.GetSegmentation()
        lookup = {label: 0 for label in BACKGROUND_LABELS}
        for index, segmentId in enumerate(segmentIds):
            lookup[segmentId.lower()] = index + 1
            lookup[segmentation.GetSegment(segmentId).GetName().lower()] = index + 1
        default = (markupsNode.GetAttribute(CLICK_LABEL_ATTRIBUTE) or "").lower()
        affine = outputs.ijkToRasArray(referenceVolumeNode)
        shape = cm.kjiShape(referenceVolumeNode)[::-1]
        toLocal = cm.worldToLocal(referenceVolumeNode)
        clicks = []
        for i in range(markupsNode.GetNumberOfControlPoints()):
            label = markupsNode.GetNthControlPointLabel(i).strip().lower()
            value = lookup.get(label, lookup.get(default))
            if value is None:
                valid = ", ".join(["background"] + [segmentation.GetSegment(s).GetName() for s in segmentIds])
                point = markupsNode.GetNthControlPointLabel(i)
                message = (f"point {point!r} of {markupsNode.GetName()} names no segment; set its label to "
                           f"one of: {valid}")
                raise ValueError(message)
            position = [0.0, 0.0, 0.0]
            markupsNode.GetNthControlPointPositionWorld(i, position)
            clicks.append(refine.click_from_ras(affine, toLocal(position), value, shape))
        return clicks

    def applyClicks(self, markupsNode, segmentationNode, sourceVolumeNode=None, probabilityVolumeNode=None,
                    radiusMm: float = 20.0, tolerance: float = 2.5) -> list[dict]:
        """Replay all control points of ``markupsNode`` on the segmentation; returns one report per click.

        The clicks are replayed on the state the segmentation had when clicking started, so moving or deleting
        a point takes its effect back. If the segmentation was edited elsewhere since the last replay, that
        edited state becomes the new starting point. Changes are one undo step.
        """
        source = sourceVolumeNode or self.sourceVolumeNode(segmentationNode)
        if source is None:
            message = f"no source volume for {segmentationNode.GetName()}; pass the volume it was made from"
            raise ValueError(message)
        probabilityVolumeNode = probabilityVolumeNode or self.probabilityNode(segmentationNode)
        segmentIds = cm.listSegmentIds(segmentationNode)
        clicks = self.clicksFromMarkups(markupsNode, segmentationNode, source)
        masks = [cm.segmentMask(segmentationNode, s, source) for s in segmentIds]
        current = cm.internalLabelmap(masks, cm.kjiShape(source))
        key = (segmentationNode.GetID(), markupsNode.GetID())
        state = self._clickStates.get(key)
        if state is None or state.segmentIds != segmentIds or not np.array_equal(state.result, current):
            state = _ClickState(current, current, segmentIds)
        probabilities = None
        if probabilityVolumeNode is not None:
            probabilities = self._internalProbabilities(segmentationNode, segmentIds, probabilityVolumeNode,
                                                        source)
        image = slicer.util.arrayFromVolume(source)
        image = (image[..., 0] if image.ndim == 4 else image).transpose(2, 1, 0)
        report: list[dict] = []
        result = refine.apply_clicks(image, state.base.transpose(2, 1, 0), probabilities, clicks,
                                     spacing_of(outputs.ijkToRasArray(source)), radius_mm=radiusMm,
                                     tolerance=tolerance, report=report).transpose(2, 1, 0)
        changed = result != current
        if changed.any():
            self.saveStateForUndo(segmentationNode)
            for index, (segmentId, mask) in enumerate(zip(segmentIds, masks, strict=False)):
                updated = mask.copy()
                # only the voxels the clicks changed: overlapping segments elsewhere stay as they are
                updated[changed] = result[changed] == index + 1
                if not np.array_equal(updated, mask):
                    box = cm.boundingBox(updated | mask)
                    cm.writeSegmentMask(segmentationNode, segmentId, source, updated[box], box)
        self._clickStates[key] = _ClickState(state.base, result, segmentIds)
        self._thresholdSession.pop(segmentationNode.GetID(), None)
        for entry in report:
            entry["segmentId"] = segmentIds[entry["value"] - 1] if entry["value"] else None
        return report

    def _thresholdRegion(self, segmentationNode, segmentId, reference, probability):
        """Where other segments are (2) and the box a threshold >= THRESHOLD_FLOOR can change (K, J, I)."""
        taken = np.zeros(cm.kjiShape(reference), np.uint8)
        for otherId in cm.listSegmentIds(segmentationNode):
            if otherId != segmentId:
                taken[cm.segmentMask(segmentationNode, otherId, reference)] = 2
        own = cm.segmentMask(segmentationNode, segmentId, reference)
        reachable = (probability >= np.float32(self.THRESHOLD_FLOOR)) | own
        reachable &= taken == 0
        return taken, cm.boundingBox(reachable)

    def _internalProbabilities(self, segmentationNode, segmentIds, probabilityVolumeNode,
                               source) -> list[np.ndarray]:
        """Background, then each segment's channel, as (I, J, K) views (1.0 for a segment without a channel)."""
        cm.checkSameGrid(probabilityVolumeNode, source)
        channels = [0] + [self.probabilityChannel(segmentationNode, s, probabilityVolumeNode)
                          for s in segmentIds]
        none = np.broadcast_to(np.float32(1.0), cm.kjiShape(source)[::-1])
        return [none if channel is None else cm.channelArray(probabilityVolumeNode, channel).transpose(2, 1, 0)
                for channel in channels]

    # ------------------------------------------------------------------------------------------ review
    def uncertainRegionsTable(self, segmentationNode, uncertaintyVolumeNode=None, probabilityVolumeNode=None,
                              tableNode=None, threshold: float = 0.5, maxRegions: int = 50,
                              minVoxels: int = 5):
        """A table of uncertain regions (rank, segment, size, uncertainty, score, R/A/S of a point inside).

        The uncertainty is ``uncertaintyVolumeNode``, else the segmentation's ``uncertainty`` attention map,
        else the entropy of the probabilities.
        """
        source = self.sourceVolumeNode(segmentationNode)
        uncertaintyVolumeNode = uncertaintyVolumeNode or self.uncertaintyNode(segmentationNode)
        probabilityVolumeNode = probabilityVolumeNode or self.probabilityNode(segmentationNode)
        reference = source or uncertaintyVolumeNode or probabilityVolumeNode
        if reference is None:
            message = (f"{segmentationNode.GetName()} has no uncertainty or probability map; re-run the "
                       "segmentation with them kept")
            raise ValueError(message)
        segmentIds = cm.listSegmentIds(segmentationNode)
        masks = [cm.segmentMask(segmentationNode, s, reference) for s in segmentIds]
        labelmap = cm.internalLabelmap(masks, cm.kjiShape(reference)).transpose(2, 1, 0)
        probabilities = None
        if probabilityVolumeNode is not None:
            probabilities = self._internalProbabilities(segmentationNode, segmentIds, probabilityVolumeNode,
                                                        reference)
        if uncertaintyVolumeNode is not None:
            cm.checkSameGrid(uncertaintyVolumeNode, reference)
            uncertainty = slicer.util.arrayFromVolume(uncertaintyVolumeNode).transpose(2, 1, 0)
        elif probabilities is not None:
            uncertainty = review.entropy(probabilities)
        else:
            message = (f"{segmentationNode.GetName()} has no uncertainty or probability map; re-run the "
                       "segmentation with them kept")
            raise ValueError(message)
        segmentation = segmentationNode.GetSegmentation()
        labels = [{"value": i + 1, "name": segmentation.GetSegment(s).GetName()}
                  for i, s in enumerate(segmentIds)]
        regions = review.uncertain_regions(uncertainty, labelmap, outputs.ijkToRasArray(reference),
                                           probabilities, threshold=threshold, min_voxels=minVoxels,
                                           max_regions=maxRegions, labels=labels)
        if tableNode is None:
            tableNode = segmentationNode.GetScene().AddNewNodeByClass(
                "vtkMRMLTableNode", segmentationNode.GetScene().GenerateUniqueName(
                    f"{segmentationNode.GetName()} uncertain regions"))
        cm.fillRegionTable(tableNode, regions)
        tableNode.SetNodeReferenceID(SEGMENTATION_ROLE, segmentationNode.GetID())
        tableNode.SetAttribute(REGION_ATTRIBUTE, "-1")
        return tableNode

    def jumpToRegion(self, tableNode, row: int) -> list[float]:
        """Centre all slice views on the region in ``row`` of a :meth:`uncertainRegionsTable` table."""
        table = tableNode.GetTable()
        if not 0 <= row < table.GetNumberOfRows():
            message = f"row {row} is not in {tableNode.GetName()} ({table.GetNumberOfRows()} regions)"
            raise ValueError(message)
        ras = [float(table.GetValueByName(row, axis).ToDouble()) for axis in ("R", "A", "S")]
        tableNode.SetAttribute(REGION_ATTRIBUTE, str(row))
        self.jumpToRas(tableNode.GetScene(), ras)
        return ras

    def nextRegion(self, tableNode) -> int | None:
        """Jump to the region after the current one (wrapping around); returns its row, None if no regions."""
        rows = tableNode.GetTable().GetNumberOfRows()
        if rows == 0:
            return None
        row = (int(tableNode.GetAttribute(REGION_ATTRIBUTE) or "-1") + 1) % rows
        self.jumpToRegion(tableNode, row)
        return row

    @staticmethod
    def jumpToRas(scene, ras) -> None:
        """Centre every slice view on ``ras`` and put the crosshair there."""
        r, a, s = (float(x) for x in ras)
        slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        crosshair = scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is not None:
            crosshair.SetCrosshairRAS(r, a, s)

    # ------------------------------------------------------------------------------------------ hand-off
    def openSegmentEditor(self, segmentationNode, sourceVolumeNode=None, segmentId: str | None = None):
        """Point the Segment Editor's parameter node at this segmentation; returns that node.

        The Widget then switches module (``slicer.util.selectModule("SegmentEditor")``); the editor picks up
        the scene's singleton ``vtkMRMLSegmentEditorNode`` (tag ``SegmentEditor``) that is set here. Edits
        made there are undone with the Segment Editor's own undo.
        """
        scene = segmentationNode.GetScene()
        source = sourceVolumeNode or self.sourceVolumeNode(segmentationNode)
        editorNode = scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
        if editorNode is None:
            editorNode = slicer.vtkMRMLSegmentEditorNode()
            editorNode.SetSingletonTag("SegmentEditor")
            editorNode = scene.AddNode(editorNode)
        if source is not None:
            if segmentationNode.GetNodeReference(
                    slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is None:
                segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(source)
        editorNode.SetAndObserveSegmentationNode(segmentationNode)
        editorNode.SetAndObserveSourceVolumeNode(source)
        segmentation = segmentationNode.GetSegmentation()
        if not segmentId:
            segmentId = segmentation.GetNthSegmentID(0) if segmentation.GetNumberOfSegments() else ""
        editorNode.SetSelectedSegmentID(segmentId)
        return editorNode
