"""HybridAttentionSeg: hybrid CNN-transformer segmentation with attention-map overlays (3D Slicer >= 5.10).

A thin module in Slicer's template shape: the panel (``Resources/UI/HybridAttentionSeg.ui``) is bound to a
typed parameter node (``HybridAttentionSegLib/parameters.py``); Apply calls the MRML-only Logic
(``HybridAttentionSegLib/logic.py``), which runs inference in a separate worker process and is polled from a
``QTimer`` here, so Slicer never freezes and Apply turns into Cancel while a run is in flight. Download / Import
and "Correct and review" are bound by ``HybridAttentionSegLib/catalog_widget.py`` / ``correction_widget.py``.
"""

import importlib
import logging
import sys
import time

import qt
import slicer
import vtk
from HybridAttentionSegLib.gui import model_info
from HybridAttentionSegLib.gui.catalog_panel import CatalogPanel
from HybridAttentionSegLib.gui.correction_panel import CorrectionPanel
from HybridAttentionSegLib.gui.install import DependencyInstaller, InstallError
from HybridAttentionSegLib.gui.parameters import HybridAttentionSegParameterNode, connectGui, disconnectGui, fillCombo
from HybridAttentionSegLib.mrml.logic import HybridAttentionSegLogic as MRMLLogic
from HybridAttentionSegLib.mrml.logic import ProcessEvent
from HybridAttentionSegLib.mrml.sample_data import registerSampleData
from HybridAttentionSegLib.worker.client import WorkerError
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

HOMEPAGE = "https://github.com/hybridattentionseg/HybridAttentionSeg"
#: how often the widget handles the worker's events while a run is in flight (ms)
POLL_INTERVAL_MS = 100
#: parameters that only change how an existing attention map is displayed
DISPLAY_PARAMETERS = ("attentionMethod", "attentionOpacity", "attentionThreshold", "colorMap", "showLegend")


class HybridAttentionSeg(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Hybrid Attention Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["HybridAttentionSeg developers"]
        self.parent.helpText = _(
            "Segment a volume with a hybrid CNN-transformer model (UNETR, SwinUNETR, Attention U-Net, "
            "TransUNet-style, CNN + self-attention) from the model catalog, and show where the model looked: "
            "attention maps (gates, rollout, window attention, Grad-CAM, uncertainty) as a colour-mapped "
            "overlay with a legend. Segments carry standard (SNOMED-CT) terminology and the input's "
            "geometry, so they export to DICOM SEG. Inference runs in a background process: Slicer stays "
            "responsive and Apply turns into Cancel while it runs.<br>"
            f'See the <a href="{HOMEPAGE}">project page</a> for the model cards and the user guide.')
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, MONAI and PyTorch. The bundled demonstration models are trained on the MNI "
            "ICBM152 2009 template (Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, "
            "Montreal Neurological Institute, McGill University). Research and demonstration use only.")
        slicer.app.connect("startupCompleted()", registerSampleData)  # cards' public samples (no download)


class HybridAttentionSegLogic(MRMLLogic, ScriptedLoadableModuleLogic):
    """The Lib's MRML Logic plus Slicer's parameter node (outside Slicer, use the Lib's Logic directly)."""

    def __init__(self, workerClient=None):
        ScriptedLoadableModuleLogic.__init__(self)  # module name -> parameter node
        MRMLLogic.__init__(self, workerClient)

    def getParameterNode(self):
        return HybridAttentionSegParameterNode(super().getParameterNode())


class HybridAttentionSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and calls the Logic; nothing else.

    ``logic`` and ``installer`` can be injected (tests, other modules).
    """

    def __init__(self, parent=None, logic=None, installer=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.installer = installer
        self._parameterNode = None
        self._parameterNodeGuiTags = None
        self._shownModelId = None
        self._lastSegmentation = None
        self._shownDisplay = None
        self._timer = None
        self._startTime = 0.0
        self.catalogPanel = None
        self.correctionPanel = None

    def setup(self):
        """Called once, when the module panel is first shown."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HybridAttentionSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or HybridAttentionSegLogic()
        self.installer = self.installer or DependencyInstaller(
            confirm=lambda text: slicer.util.confirmOkCancelDisplay(text,
                                                                    windowTitle=_("Install dependencies")))
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)
        self.ui.progressBar.hide()
        self.ui.modelCardBrowser.setHtml(model_info.modelCardHtml(None))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.catalogPanel = CatalogPanel(self.ui, self.logic, self)
        self.catalogPanel.setup()
        self.correctionPanel = CorrectionPanel(self.ui, self.setStatus)
        self.correctionPanel.setup()
        self.initializeParameterNode()

    def cleanup(self):
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()
        if self.correctionPanel is not None:
            self.correctionPanel.cleanup()
        if self._timer is not None:
            self._timer.stop()
        if self.logic is not None:
            self.logic.shutdown()

    def enter(self):
        """Called each time the user opens this module: bind the panel and list the models (once)."""
        self.initializeParameterNode()
        missing = self.installer.missing()
        if missing:
            self.setStatus(_("Python packages are missing: {packages}. Click Apply to install them.").format(
                packages=", ".join(missing)))
        elif self.logic.environment is None and not self.logic.busy:
            self.onRefreshModels()

    def exit(self):
        """Called each time the user opens a different module."""
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            disconnectGui(self._parameterNode, self._parameterNodeGuiTags)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.onParameterNodeModified)
        self._parameterNode = parameterNode
        self.correctionPanel.setParameterNode(parameterNode)
        if self._parameterNode:
            self._parameterNodeGuiTags = connectGui(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    # ------------------------------------------------------------------------------- catalog lists
    def onRefreshModels(self):
        """Ask the worker (asynchronously) for the catalog and the compute devices."""
        if self.logic.busy:
            return
        self.setStatus(_("Loading the model catalog..."))
        try:
            self.logic.fetchEnvironment(onDone=self.onEnvironment, waitForCompletion=False)
        except WorkerError as err:
            self.onEnvironment(None, err)
            return
        self.startPolling()

    def startPolling(self):  # the timer handles the worker's events until the Logic is idle
        self._timer.start()

    def selectModel(self, modelId):  # kept in the parameter node until the catalog lists it
        if self._parameterNode is not None:
            self._parameterNode.modelId = modelId
            self._shownModelId = None

    def onEnvironment(self, environment, error):
        if error is not None:
            self.setStatus(_("Could not load the model catalog: {error}").format(error=error))
            return
        self._fillCombo(self.ui.modelComboBox, model_info.modelChoices(environment), "modelId")
        self._fillCombo(self.ui.deviceComboBox, model_info.deviceChoices(environment), "device")
        self._shownModelId = None
        self.onParameterNodeModified()
        self.setStatus(_("{count} models available.").format(count=len(environment.get("catalog", []))))

    def _fillCombo(self, combo, choices, parameterName):
        """Replace ``combo``'s items (text, data) and keep the parameter's value if it is still offered."""
        fillCombo(combo, choices, self._parameterNode, parameterName)

    # ------------------------------------------------------------------------------- parameter changes
    def onParameterNodeModified(self, caller=None, event=None):
        parameters = self._parameterNode
        if parameters is None:
            return
        if parameters.modelId != self._shownModelId and self.logic.environment is not None:
            self._shownModelId = parameters.modelId
            card = self.logic.card(parameters.modelId)
            self.ui.modelCardBrowser.setHtml(model_info.modelCardHtml(card))
            self._fillCombo(self.ui.attentionMethodComboBox, model_info.attentionChoices(card),
                            "attentionMethod")
            self._fillCombo(self.ui.targetClassComboBox, model_info.classChoices(card), "targetClass")
        running = self.logic.isRunning
        self.catalogPanel.update(self.logic.card(parameters.modelId))
        self.correctionPanel.update()
        self.ui.applyButton.enabled = running or bool(parameters.inputVolume and parameters.modelId
                                                      and not self.catalogPanel.busy)
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.toolTip = _("Cancel the running segmentation") if running else _(
            "Run the model on the input volume")
        segmentation = self._lastSegmentation
        display = (segmentation, *(parameters.getValue(name) for name in DISPLAY_PARAMETERS))
        if not running and segmentation is not None and segmentation.GetScene() is slicer.mrmlScene \
                and display != self._shownDisplay:  # not again for every other parameter (a threshold drag)
            self._shownDisplay = display
            shown = self.logic.updateAttentionDisplay(
                segmentation, parameters.attentionMethod, opacity=parameters.attentionOpacity,
                threshold=parameters.attentionThreshold, colorMap=parameters.colorMap,
                showLegend=parameters.showLegend)
            if not shown:
                self.setStatus(_("Click Apply to compute the {method} map.").format(
                    method=parameters.attentionMethod))

    # ------------------------------------------------------------------------------- run / cancel
    def onApplyButton(self):
        """Apply starts a run; while a run is in flight the same button cancels it."""
        if self.logic.isRunning:
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if not self.ensureDependencies():
                return
            if self.logic.environment is None:
                self.onEnvironment(self.logic.fetchEnvironment(), None)
            parameters = self._parameterNode
            self.logic.process(
                parameters.inputVolume, parameters.modelId,
                attentionMethods=[parameters.attentionMethod] if parameters.attentionMethod else None,
                outputSegmentation=parameters.outputSegmentation, waitForCompletion=False,
                onEvent=self.onProcessEvent, targetClass=parameters.targetClass or None,
                device=parameters.device, keepProbabilities=parameters.keepProbabilities,
                display=self._displaySettings())
            self._startTime = time.monotonic()
            self._setRunning(True)

    def ensureDependencies(self):
        """Install missing Python packages (asks first); False, with the reason shown, if they are missing."""
        try:
            self.installer.ensure()
        except InstallError as err:
            self.setStatus(str(err))
            return False
        return True

    def onPollTimer(self):
        self.logic.poll()
        if not self.logic.busy:
            self._timer.stop()

    def onProcessEvent(self, event, info):
        if event == ProcessEvent.PROGRESS:
            stage = _("Downloading weights") if info.get("stage") == "download" else _("Segmenting")
            self.ui.progressBar.format = f"{stage} %p%"
            self.ui.progressBar.value = int(info.get("percent") or 0)
        elif event == ProcessEvent.LOG:
            self.setStatus(str(info.get("message", ""))[:200])
        elif event == ProcessEvent.IMPORTING:
            self.setStatus(_("Loading the results into the scene..."))
        elif event == ProcessEvent.FINISHED:
            result = info["result"]
            self._lastSegmentation, self._shownDisplay = result.segmentationNode, None
            self.correctionPanel.onResult(result.segmentationNode)
            self._setRunning(False)
            inference = result.summary.get("timings", {}).get("total_s", 0.0)
            self.setStatus(_("Done in {seconds:.1f} s ({inference:.1f} s inference on {device}): "
                             "{segments} segments.").format(
                seconds=time.monotonic() - self._startTime, inference=inference,
                device=result.summary.get("device", "?"), segments=len(result.summary.get("segments", []))))
        elif event == ProcessEvent.CANCELLED:
            self._setRunning(False)
            self.setStatus(_("Cancelled; the scene was not changed."))
        elif event == ProcessEvent.FAILED:
            self._setRunning(False)
            self.setStatus(_("Failed: {message}").format(message=info.get("message")))
            slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=info.get("message")))

    def _setRunning(self, running):
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                       self.ui.correctionCollapsibleButton):
            widget.enabled = not running
        if running:
            self.setStatus(_("Starting the inference worker..."))
            self.startPolling()
        self.onParameterNodeModified()

    def _displaySettings(self):
        parameters = self._parameterNode
        return {"opacity": parameters.attentionOpacity, "threshold": parameters.attentionThreshold,
                "colorMap": parameters.colorMap, "showLegend": parameters.showLegend}

    def setStatus(self, text):
        self.ui.statusLabel.text = text
        logging.info("HybridAttentionSeg: %s", text)

    def onReload(self):
        """Reload the Lib modules too (developer mode), then the module itself."""
        if self.logic is not None:
            self.logic.shutdown()
        # the Slicer-side files only, dependencies first; the core runs in the worker, which restarts anyway
        # Dependencies first (worker -> mrml -> gui), so every module is reloaded after the ones it imports.
        for name in ("worker.client", "mrml.events", "mrml.rendering", "mrml.outputs", "mrml.correction_masks",
                     "mrml.correction", "mrml.catalog_logic", "mrml.logic", "mrml.sample_data", "gui.model_info",
                     "gui.install", "gui.parameters", "gui.catalog_panel", "gui.correction_panel"):
            module = sys.modules.get(f"HybridAttentionSegLib.{name}")
            if module is not None:
                importlib.reload(module)
        super().onReload()


class HybridAttentionSegTest(ScriptedLoadableModuleTest):
    """The full pipeline inside Slicer: real worker, real inference on a bundled model and its sample data."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PanelLoadsItsWidgetsAndBindsTheCorrectionParameters()
        self.setUp()
        self.test_SegmentBundledDemoData()

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

    def test_SegmentBundledDemoData(self):
        self.delayDisplay("Starting the inference worker")
        missing = DependencyInstaller().missing()
        self.assertEqual(missing, [], f"install the module's Python packages first: {missing}")
        logic = HybridAttentionSegLogic()
        try:
            environment = logic.fetchEnvironment()
            cards = [c for c in environment["catalog"] if c.get("bundled") and c.get("sample_data")]
            self.assertTrue(cards, "no bundled model with sample data in the catalog")
            card = cards[0]
            self.delayDisplay(f"Loading the sample data of {card['id']}")
            volume = logic.loadSampleData(card["id"])
            self.delayDisplay(f"Segmenting with {card['id']} (real inference)")
            result = logic.process(volume, card["id"], timeout=1800)

            segments = result.segmentationNode.GetSegmentation()
            names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
            expected = [label["name"] for label in sorted(card["labels"], key=lambda x: x["value"])]
            self.assertEqual(names, expected)
            for i in range(segments.GetNumberOfSegments()):
                self.assertTrue(segments.GetNthSegment(i).HasTag("TerminologyEntry"))
            self.assertGreater(sum(row["voxels"] for row in result.summary["segments"]), 0)
            attention = result.attentionNodes[card["natural_method"]]
            inputMatrix, attentionMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
            volume.GetIJKToRASMatrix(inputMatrix)
            attention.GetIJKToRASMatrix(attentionMatrix)
            self.assertTrue(all(inputMatrix.GetElement(r, c) == attentionMatrix.GetElement(r, c)
                                for r in range(4) for c in range(4)))
            self.assertEqual(attention.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
            red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
            self.assertEqual(red.GetForegroundVolumeID(), attention.GetID())
            slicer.util.resetSliceViews()
            self.delayDisplay("Test passed")
        finally:
            logic.shutdown()
