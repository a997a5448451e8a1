"""The "Correct and review" section of the module panel, bound to the parameter node; the work is
:class:`~.correction.CorrectionLogic`'s.

Qt side: imported only inside Slicer, by the module widget. The section's state lives in the parameter node
(``correctionSegmentation``, ``correctionSegment``, ``segmentThreshold``, ``clickMarkups``, ``clickLabel``,
``autoApplyClicks``); this class reacts to it:

* moving the threshold slider (a ``segmentThreshold`` change with the same segmentation and segment) calls
  :meth:`~.correction.CorrectionLogic.setSegmentThreshold` at once;
* the point list's label format is the chosen click label, so every point placed with the place widget is
  labelled with the segment name (or "background") it stands for; placing, moving (end of the drag) or
  deleting a point replays all clicks when ``autoApplyClicks`` is on (else "Apply clicks" does);
* "Find uncertain regions" fills a table shown in the table view; a row click or "Next region" centres the
  slice views; Undo / Redo / "Edit in Segment Editor" call the CorrectionLogic.
"""

from __future__ import annotations

import logging

import slicer
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from ..mrml.correction import SEGMENTATION_ROLE, CorrectionLogic
from .parameters import fillCombo

logger = logging.getLogger(__name__)

BACKGROUND = "background"
#: point-list events that change what the clicks say (placed, dragged and released, deleted)
MARKUPS_EVENTS = ("PointPositionDefinedEvent", "PointEndInteractionEvent", "PointRemovedEvent")
#: segmentation events that change the list of segments
SEGMENT_EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified")


class CorrectionPanel(VTKObservationMixin):
    """Binds the correction widgets of the module's ``ui``; ``setStatus(text)`` reports to the panel."""

    def __init__(self, ui, setStatus, correctionLogic: CorrectionLogic | None = None):
        VTKObservationMixin.__init__(self)
        self.ui = ui
        self.logic = correctionLogic or CorrectionLogic()
        self.setStatus = setStatus
        self._parameterNode = None
        self._segmentation = None
        self._markups = None
        self._segmentsShown = None
        self._thresholdState = None  # ((segmentation ID, segment ID), threshold) last seen
        self._table = None  # the uncertain-region table shown

    def setup(self) -> None:
        self.ui.clickPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.applyClicksButton.connect("clicked(bool)", self.onApplyClicks)
        self.ui.findRegionsButton.connect("clicked(bool)", self.onFindRegions)
        self.ui.nextRegionButton.connect("clicked(bool)", self.onNextRegion)
        self.ui.uncertainRegionsTableView.connect("clicked(QModelIndex)", self.onRegionClicked)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.redoButton.connect("clicked(bool)", self.onRedo)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onSegmentEditor)

    def cleanup(self) -> None:
        self.removeObservers()

    def setParameterNode(self, parameterNode) -> None:
        """Follow ``parameterNode`` (None: stop observing the segmentation and the clicks)."""
        self._parameterNode = parameterNode
        self._segmentsShown = self._thresholdState = None
        if parameterNode is None:
            self._observe(None, None)

    def onResult(self, segmentationNode) -> None:
        """A run finished: correct its segmentation, with an empty point list for its clicks."""
        parameters = self._parameterNode
        if parameters is None:
            return
        markups = parameters.clickMarkups
        if markups is None or markups.GetNumberOfControlPoints() > 0:
            scene = segmentationNode.GetScene()
            markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(
                f"{segmentationNode.GetName()} clicks"))
            markups.CreateDefaultDisplayNodes()
        parameters.clickMarkups = markups
        parameters.correctionSegmentation = segmentationNode

    # ------------------------------------------------------------------------------------------ state
    def update(self) -> None:
        """Called on every parameter node change: follow the nodes, refill lists, apply a threshold move."""
        parameters = self._parameterNode
        if parameters is None:
            return
        segmentation, markups = parameters.correctionSegmentation, parameters.clickMarkups
        self._observe(segmentation, markups)
        self._fillSegments()
        if markups is not None and parameters.clickLabel:
            labelFormat = parameters.clickLabel.replace("%", "%%")  # %N / %d are placeholders
            if markups.GetControlPointLabelFormat() != labelFormat:
                markups.SetControlPointLabelFormat(labelFormat)
        self._liveThreshold()
        has = segmentation is not None
        for widget in (self.ui.correctionSegmentComboBox, self.ui.segmentThresholdSliderWidget,
                       self.ui.clickLabelComboBox, self.ui.findRegionsButton, self.ui.undoButton,
                       self.ui.redoButton, self.ui.segmentEditorButton):
            widget.enabled = has
        self.ui.applyClicksButton.enabled = has and markups is not None
        self.ui.nextRegionButton.enabled = self._table is not None and self._table.GetScene() is not None

    def _observe(self, segmentation, markups) -> None:
        if segmentation is not self._segmentation:
            if self._segmentation is not None:
                for event in SEGMENT_EVENTS:
                    self.removeObserver(self._segmentation, getattr(slicer.vtkSegmentation, event),
                                        self.onSegmentsChanged)
            self._segmentation = segmentation
            for event in SEGMENT_EVENTS if segmentation is not None else ():
                self.addObserver(segmentation, getattr(slicer.vtkSegmentation, event), self.onSegmentsChanged)
            self._segmentsShown = None
            self._showTable(self._regionTable())
        if markups is not self._markups:
            if self._markups is not None:
                for event in MARKUPS_EVENTS:
                    self.removeObserver(self._markups, getattr(slicer.vtkMRMLMarkupsNode, event),
                                        self.onClicksChanged)
            self._markups = markups
            for event in MARKUPS_EVENTS if markups is not None else ():
                self.addObserver(markups, getattr(slicer.vtkMRMLMarkupsNode, event), self.onClicksChanged)
            self.ui.clickPlaceWidget.setCurrentNode(markups)

    def onSegmentsChanged(self, caller=None, event=None) -> None:
        self._fillSegments()

    def _fillSegments(self) -> None:
        """Segment choices (threshold: segment IDs; clicks: segment names and background), when they change."""
        segmentation = self._segmentation
        segments = []
        if segmentation is not None:
            content = segmentation.GetSegmentation()
            segments = [(content.GetNthSegment(i).GetName(), content.GetNthSegmentID(i))
                        for i in range(content.GetNumberOfSegments())]
        shown = (segmentation.GetID() if segmentation else None, tuple(segments))
        if shown == self._segmentsShown:
            return
        self._segmentsShown = shown  # before filling: filling modifies the parameter node (re-entrant update)
        parameters = self._parameterNode
        fillCombo(self.ui.correctionSegmentComboBox, segments, parameters, "correctionSegment")
        clickChoices = [(name, name) for name, _id in segments] + [(_("Background"), BACKGROUND)]
        fillCombo(self.ui.clickLabelComboBox, clickChoices if segments else [], parameters, "clickLabel")

    def _liveThreshold(self) -> None:
        """Apply ``segmentThreshold`` when it moved while the segmentation and segment stayed the same."""
        parameters = self._parameterNode
        segmentation, segmentId = parameters.correctionSegmentation, parameters.correctionSegment
        key = (segmentation.GetID(), segmentId) if segmentation is not None and segmentId else None
        previous, self._thresholdState = self._thresholdState, (key, parameters.segmentThreshold)
        if key is None or previous is None or previous[0] != key or previous[1] == parameters.segmentThreshold:
            return
        try:
            voxels = self.logic.setSegmentThreshold(segmentation, segmentId, None, parameters.segmentThreshold)
        except ValueError as err:  # no probability map, a hand-made segment...: say it, keep dragging quiet
            self.setStatus(str(err))
            return
        self.setStatus(_("{segment}: {voxels} voxels at threshold {threshold:.2f}.").format(
            segment=segmentation.GetSegmentation().GetSegment(segmentId).GetName(), voxels=voxels,
            threshold=parameters.segmentThreshold))

    # ------------------------------------------------------------------------------------------ clicks
    def onClicksChanged(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is not None and parameters.autoApplyClicks:
            self.onApplyClicks()

    def onApplyClicks(self) -> None:
        parameters = self._parameterNode
        segmentation, markups = parameters.correctionSegmentation, parameters.clickMarkups
        if segmentation is None or markups is None:
            return
        try:
            with slicer.util.WaitCursor():
                report = self.logic.applyClicks(markups, segmentation)
        except ValueError as err:  # a point naming no segment, no source volume
            self.setStatus(str(err))
            return
        changed = sum(entry.get("changed", 0) for entry in report)
        self.setStatus(_("{clicks} click(s) replayed; {voxels} voxels changed by them.").format(
            clicks=len(report), voxels=changed))

    # ------------------------------------------------------------------------------------------ review
    def _regionTable(self):
        """The newest uncertain-region table of the current segmentation (None if there is none)."""
        segmentation = self._segmentation
        if segmentation is None or segmentation.GetScene() is None:
            return None
        tables = [node for node in slicer.util.getNodesByClass("vtkMRMLTableNode", segmentation.GetScene())
                  if node.GetNodeReferenceID(SEGMENTATION_ROLE) == segmentation.GetID()]
        return tables[-1] if tables else None

    def _showTable(self, table) -> None:
        self._table = table
        self.ui.uncertainRegionsTableView.setMRMLTableNode(table)
        self.ui.nextRegionButton.enabled = table is not None

    def onFindRegions(self) -> None:
        segmentation = self._parameterNode.correctionSegmentation
        if segmentation is None:
            return
        try:
            with slicer.util.WaitCursor():
                table = self.logic.uncertainRegionsTable(segmentation, tableNode=self._regionTable())
        except ValueError as err:
            self.setStatus(str(err))
            return
        self._showTable(table)
        self.setStatus(_("{count} uncertain regions; click a row or Next region to visit them.").format(
            count=table.GetNumberOfRows()))

    def onNextRegion(self) -> None:
        table = self._regionTable()
        self._showTable(table)
        row = self.logic.nextRegion(table) if table is not None else None
        if row is None:
            self.setStatus(_("No uncertain regions listed."))
            return
        self.ui.uncertainRegionsTableView.selectRow(row)  # sorting is off in the .ui: view row = table row
        self.setStatus(_("Region {rank} of {count}.").format(rank=row + 1,
                                                             count=table.GetTable().GetNumberOfRows()))

    def onRegionClicked(self, index) -> None:
        table = self._regionTable()
        if table is not None and index.isValid():
            self.logic.jumpToRegion(table, index.row())

    # ------------------------------------------------------------------------------------------ history
    def onUndo(self) -> None:
        self._history(self.logic.undo, _("undo"))

    def onRedo(self) -> None:
        self._history(self.logic.redo, _("redo"))

    def _history(self, step, name: str) -> None:
        segmentation = self._parameterNode.correctionSegmentation if self._parameterNode else None
        if segmentation is None:
            return
        if step(segmentation):
            self._thresholdState = None  # the slider's next move starts a new undo step
            self.setStatus(_("Done: {step}.").format(step=name))
        else:
            self.setStatus(_("Nothing to {step}.").format(step=name))

    def onSegmentEditor(self) -> None:
        parameters = self._parameterNode
        if parameters is None or parameters.correctionSegmentation is None:
            return
        self.logic.openSegmentEditor(parameters.correctionSegmentation,
                                     segmentId=parameters.correctionSegment or None)
        slicer.util.selectModule("SegmentEditor")
