"""The module's in-Slicer self-test (``HybridAttentionSegTest`` in the module file subclasses :class:`SelfTest`).

Runs inside the Slicer application: from *Reload and Test* in developer mode, and as the ctest that
``slicer_add_python_unittest`` registers. Slicer's extension build machines run it with ``--testing`` and
without torch (Slicer ships numpy, not torch, and installs nothing in testing mode), so every part that needs
torch checks :meth:`~.install.DependencyInstaller.missing` first and says clearly that it skipped; everything
else (the panel, its state without torch, the input checks, results becoming nodes) runs everywhere.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from ..core import paths
from ..core.errors import UserInputError
from ..mrml import outputs, transaction
from ..mrml.logic import HybridAttentionSegLogic
from .install import DependencyInstaller
from .panel_state import Action

logger = logging.getLogger(__name__)

#: the bundled demo model whose template ships as NRRD sample data (read without torch or nilearn)
DEMO_MODEL = "mni-tissue-attention-unet"


class SelfTest(ScriptedLoadableModuleTest):
    """The panel, the input checks and the result import everywhere; real inference where torch is installed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_PanelLoadsItsWidgetsAndBindsTheCorrectionParameters,
                     self.test_InputCheckRefusesVectorVolumesAndOwnOutputs,
                     self.test_ResultFilesBecomeNodesOnTheInputGrid, self.test_SegmentBundledDemoData):
            self.setUp()
            test()

    def _template(self):
        return slicer.util.loadVolume(str(paths.MODELS_DIR / "mni152-t1-2mm.nrrd"))

    def _card(self):
        import json

        return json.loads((paths.MODELS_DIR / f"{DEMO_MODEL}.json").read_text())

    def test_PanelLoadsItsWidgetsAndBindsTheCorrectionParameters(self):
        slicer.util.selectModule("HybridAttentionSeg")  # designer plugins build the .ui's Slicer widgets
        widget = slicer.modules.hybridattentionseg.widgetRepresentation().self()
        self.assertIsInstance(widget.ui.clickPlaceWidget, slicer.qSlicerMarkupsPlaceWidget)
        self.assertIsInstance(widget.ui.uncertainRegionsTableView, slicer.qMRMLTableView)
        markups = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
        widget._parameterNode.segmentThreshold = 0.7
        widget._parameterNode.clickMarkups = markups
        self.assertAlmostEqual(widget.ui.segmentThresholdSliderWidget.value, 0.7)
        self.assertIs(widget.ui.clickMarkupsSelector.currentNode(), markups)
        self.assertIs(widget.ui.clickPlaceWidget.currentNode(), markups)
        # the button shows the panel state; without the packages it offers to install them
        button = widget.panel.state.applyButton(widget.panel.inputs())
        self.assertEqual(widget.ui.applyButton.text, button.text)
        self.assertEqual(widget.ui.applyButton.enabled, button.enabled)
        if DependencyInstaller().missing():
            self.assertIs(button.action, Action.INSTALL)
            self.assertTrue(widget.ui.applyButton.enabled)

    def test_InputCheckRefusesVectorVolumesAndOwnOutputs(self):
        logic = HybridAttentionSegLogic()  # no request is sent: the input check comes first
        try:
            for className in ("vtkMRMLVectorVolumeNode", "vtkMRMLDiffusionTensorVolumeNode",
                              "vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLLabelMapVolumeNode"):
                node = slicer.mrmlScene.AddNewNodeByClass(className)
                with self.assertRaises(UserInputError, msg=className):
                    logic.process(node, DEMO_MODEL)
            self.assertFalse(logic.worker.running, "a refused input must not start the worker")
        finally:
            logic.shutdown()

    def test_ResultFilesBecomeNodesOnTheInputGrid(self):
        """What the worker writes becomes a segmentation and an attention overlay (no torch needed)."""
        volume = self._template()
        card = self._card()
        image = slicer.util.arrayFromVolume(volume)
        labels = np.zeros(image.shape, np.uint8)
        labels[image > np.percentile(image, 60)] = 1
        labels[image > np.percentile(image, 85)] = 2
        with tempfile.TemporaryDirectory() as folder:
            files = {"segmentation": self._save(volume, labels, "vtkMRMLLabelMapVolumeNode", folder, "seg"),
                     "attention-gates": self._save(volume, (image / max(image.max(), 1)).astype(np.float32),
                                                   "vtkMRMLScalarVolumeNode", folder, "gates")}
            segments = [{"name": label["name"], "value": label["value"],
                         "voxels": int((labels == label["value"]).sum()), "volume_ml": 0.0}
                        for label in card["labels"]]
            summary = {"model": card["id"], "title": card["title"], "labels": card["labels"], "files": files,
                       "segments": segments, "attention_methods": ["gates"], "natural_method": "gates"}
            result = transaction.importResult(volume, summary)
        names = [s.GetName() for s in self._segments(result.segmentationNode)]
        self.assertEqual(names, [label["name"] for label in card["labels"]])
        attention = result.attentionNodes["gates"]
        self.assertEqual(attention.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        self.assertTrue(np.array_equal(outputs.ijkToRasArray(attention), outputs.ijkToRasArray(volume)))
        red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(red.GetForegroundVolumeID(), attention.GetID())

    @staticmethod
    def _save(reference, array, className, folder, name) -> str:
        node = slicer.mrmlScene.AddNewNodeByClass(className, name)
        matrix = vtk.vtkMatrix4x4()
        reference.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(node, array)
        path = str(Path(folder) / f"{name}.nrrd")
        slicer.util.saveNode(node, path)
        slicer.mrmlScene.RemoveNode(node)
        return path

    @staticmethod
    def _segments(segmentationNode) -> list:
        content = segmentationNode.GetSegmentation()
        return [content.GetNthSegment(i) for i in range(content.GetNumberOfSegments())]

    def test_SegmentBundledDemoData(self):
        missing = DependencyInstaller().missing()
        if missing:  # the extension build machines: no torch, and testing mode installs nothing
            message = (f"Skipped real inference: Python packages {', '.join(missing)} are not installed "
                       "(the panel offers to install them); the other self-tests ran.")
            logger.warning(message)
            self.delayDisplay(message)
            return
        self.delayDisplay("Starting the inference worker")
        logic = HybridAttentionSegLogic()
        try:
            environment = logic.fetchEnvironment()
            card = next(c for c in environment["catalog"] if c["id"] == DEMO_MODEL)
            volume = logic.loadSampleData(card["id"])
            self.delayDisplay(f"Segmenting with {card['id']} (real inference)")
            result = logic.process(volume, card["id"], timeout=1800)
            segments = self._segments(result.segmentationNode)
            expected = [label["name"] for label in sorted(card["labels"], key=lambda x: x["value"])]
            self.assertEqual([s.GetName() for s in segments], expected)
            self.assertTrue(all(s.HasTag("TerminologyEntry") for s in segments))
            self.assertGreater(sum(row["voxels"] for row in result.summary["segments"]), 0)
            attention = result.attentionNodes[card["natural_method"]]
            self.assertTrue(np.array_equal(outputs.ijkToRasArray(attention), outputs.ijkToRasArray(volume)))
            self.assertEqual(attention.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
            red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
            self.assertEqual(red.GetForegroundVolumeID(), attention.GetID())
            slicer.util.resetSliceViews()
            self.delayDisplay("Test passed")
        finally:
            logic.shutdown()
