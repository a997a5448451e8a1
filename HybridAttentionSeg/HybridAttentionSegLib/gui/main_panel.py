"""The main section of the module panel: input, model, device, outputs, Apply/Cancel, progress and status.

Qt side: imported only inside Slicer, by the module widget. Every decision (what Apply offers, when a queued
run starts, what the status says) is :class:`~.panel_state.PanelState`'s; this class feeds it the events
(dependency check, install, catalog answer, run events), performs the :class:`~.panel_state.Action` it returns
and shows its view. Nothing here blocks a Qt slot on the worker: catalog requests and runs are polled from a
``QTimer``. The catalog buttons (:class:`~.catalog_panel.CatalogPanel`) and the correction section
(:class:`~.correction_panel.CorrectionPanel`) are created and fed from here.
"""

from __future__ import annotations

import logging
import time

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from ..mrml.events import ProcessEvent
from ..worker.client import WorkerError
from . import model_info
from .catalog_panel import CatalogPanel
from .correction_panel import CorrectionPanel
from .install import InstallError
from .panel_state import Action, Inputs, PanelState, Phase
from .parameters import fillCombo

logger = logging.getLogger(__name__)

#: how often the worker's events are handled while a request or a run is in flight (ms)
POLL_INTERVAL_MS = 100
#: parameters that only change how an existing attention map is displayed
DISPLAY_PARAMETERS = ("attentionMethod", "attentionOpacity", "attentionThreshold", "colorMap", "showLegend")


class MainPanel(VTKObservationMixin):
    """Binds :class:`PanelState` and the parameter node to the module's ``ui``; calls the Logic.

    Args:
        ui: the module's ``childWidgetVariables`` namespace.
        logic: the module Logic.
        installer: a :class:`~.install.DependencyInstaller`.
    """

    def __init__(self, ui, logic, installer):
        VTKObservationMixin.__init__(self)
        self.ui = ui
        self.logic = logic
        self.installer = installer
        self.state = PanelState(installer.missing())
        self._parameterNode = None
        self._shownModelId = None
        self._shownClassKey = None
        self._lastSegmentation = None
        self._shownDisplay = None
        self._shownStatus = None
        self._startTime = 0.0
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)
        self.catalogPanel = CatalogPanel(ui, logic, self)
        self.correctionPanel = CorrectionPanel(ui, self.setStatus)

    def setup(self) -> None:
        self.ui.progressBar.hide()
        self.ui.modelCardBrowser.setHtml(model_info.modelCardHtml(None))
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.catalogPanel.setup()
        self.correctionPanel.setup()
        self.refresh()

    def cleanup(self) -> None:
        self.removeObservers()
        self.correctionPanel.cleanup()
        self._timer.stop()

    def enter(self, parameterNode) -> None:
        """The module is shown: follow the correction clicks again, check the packages, list the models."""
        self.correctionPanel.setParameterNode(parameterNode)
        if self.state.dependenciesChecked(self.installer.missing()) is Action.LOAD_CATALOG \
                and not self.logic.busy:
            self.requestCatalog()
        self.onParameterNodeModified()

    def exit(self) -> None:
        """Another module is shown: stop replaying clicks placed there (the widgets stay bound)."""
        self.correctionPanel.setParameterNode(None)

    def setParameterNode(self, parameterNode) -> None:
        """Observe ``parameterNode`` (a newly bound node, or None)."""
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = parameterNode
        self._shownModelId = None
        self.correctionPanel.setParameterNode(parameterNode)
        if parameterNode is not None:
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    # ------------------------------------------------------------------------------------- view
    def inputs(self) -> Inputs:
        parameters = self._parameterNode
        if parameters is None:
            return Inputs(catalogBusy=self.catalogPanel.busy)
        return Inputs(hasInputVolume=parameters.inputVolume is not None, modelId=parameters.modelId,
                      catalogBusy=self.catalogPanel.busy)

    def refresh(self) -> None:
        """Show the state: Apply's text/action, progress, enabled sections, the status when it changed."""
        button = self.state.applyButton(self.inputs())
        self.ui.applyButton.text = button.text
        self.ui.applyButton.enabled = button.enabled
        self.ui.applyButton.toolTip = button.toolTip
        self.ui.progressBar.visible = self.state.progressVisible
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                       self.ui.correctionCollapsibleButton):
            widget.enabled = self.state.inputsEnabled
        self.ui.refreshModelsButton.enabled = self.state.phase not in (Phase.RUNNING, Phase.INSTALLING)
        if self.state.status != self._shownStatus:
            self._shownStatus = self.state.status
            self.setStatus(self.state.status)

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        logger.info("HybridAttentionSeg: %s", text)

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None:
            return
        if parameters.modelId != self._shownModelId and self.logic.environment is not None:
            self._shownModelId = parameters.modelId
            card = self.logic.card(parameters.modelId)
            self.ui.modelCardBrowser.setHtml(model_info.modelCardHtml(card))
            fillCombo(self.ui.attentionMethodComboBox, model_info.attentionChoices(card), parameters,
                      "attentionMethod")
            self._shownClassKey = None
        classKey = (parameters.modelId, parameters.attentionMethod)
        if classKey != self._shownClassKey and self.logic.environment is not None:
            # a class map the card ships for some classes only offers only those (core/models/offers.py)
            self._shownClassKey = classKey
            fillCombo(self.ui.targetClassComboBox, model_info.classChoices(
                self.logic.card(parameters.modelId), parameters.attentionMethod), parameters, "targetClass")
        self.catalogPanel.update(self.logic.card(parameters.modelId))
        self.correctionPanel.update()
        self.refresh()
        segmentation = self._lastSegmentation
        display = (segmentation, *(parameters.getValue(name) for name in DISPLAY_PARAMETERS))
        if not self.logic.isRunning and segmentation is not None and segmentation.GetScene() is slicer.mrmlScene \
                and display != self._shownDisplay:  # not again for every other parameter (a threshold drag)
            self._shownDisplay = display
            shown = self.logic.updateAttentionDisplay(
                segmentation, parameters.attentionMethod, opacity=parameters.attentionOpacity,
                threshold=parameters.attentionThreshold, colorMap=parameters.colorMap,
                showLegend=parameters.showLegend)
            if not shown:
                self.setStatus(_("Click Apply to compute the {method} map.").format(
                    method=parameters.attentionMethod))

    # ------------------------------------------------------------------------------------- actions
    def onApplyButton(self) -> None:
        """Do what the button offers now: install, load the catalog, (un)queue, run or cancel."""
        action = self.state.applyPressed(self.inputs())
        if action is Action.INSTALL:
            self.ensureDependencies()
        elif action is Action.LOAD_CATALOG:
            self.onRefreshModels()
        elif action is Action.RUN:
            self.startRun()
        elif action is Action.CANCEL:
            self.logic.cancel()
        self.refresh()

    def ensureDependencies(self) -> bool:
        """Install the missing Python packages (the installer asks first); True when none is missing."""
        if not self.installer.missing():
            return True
        self.state.installStarted()
        self.refresh()
        error = None
        try:
            self.installer.ensure()
        except InstallError as err:
            error = str(err)
        nextAction = self.state.installFinished(self.installer.missing(), error)
        self.refresh()
        if nextAction is Action.LOAD_CATALOG and not self.logic.busy:
            self.requestCatalog()
        return not self.state.missing

    def onRefreshModels(self) -> None:
        """Check the packages again and ask the worker (asynchronously) for the catalog and the devices."""
        self.state.dependenciesChecked(self.installer.missing())
        if self.state.canRequestCatalog and not self.logic.busy:
            self.requestCatalog()
        self.refresh()

    def requestCatalog(self) -> None:
        self.state.catalogRequested()
        try:
            self.logic.fetchEnvironment(onDone=self.onEnvironment, waitForCompletion=False)
        except WorkerError as err:
            self.onEnvironment(None, err)
            return
        self.startPolling()
        self.refresh()

    def onEnvironment(self, environment, error) -> None:
        if error is not None:
            self.state.catalogFailed(str(error))
            self.refresh()
            return
        fillCombo(self.ui.modelComboBox, model_info.modelChoices(environment), self._parameterNode, "modelId")
        fillCombo(self.ui.deviceComboBox, model_info.deviceChoices(environment), self._parameterNode, "device")
        self._shownModelId = None
        self.onParameterNodeModified()
        if self.state.catalogLoaded(len(environment.get("catalog", [])), self.inputs()) is Action.RUN:
            self.startRun()
        self.refresh()

    def selectModel(self, modelId: str) -> None:  # kept in the parameter node until the catalog lists it
        if self._parameterNode is not None:
            self._parameterNode.modelId = modelId
            self._shownModelId = None

    def startPolling(self) -> None:  # the timer handles the worker's events until the Logic is idle
        self._timer.start()

    def onPollTimer(self) -> None:
        self.logic.poll()
        if not self.logic.busy:
            self._timer.stop()

    def startRun(self) -> None:
        parameters = self._parameterNode
        try:
            self.logic.process(
                parameters.inputVolume, parameters.modelId,
                attentionMethods=[parameters.attentionMethod] if parameters.attentionMethod else None,
                outputSegmentation=parameters.outputSegmentation, waitForCompletion=False,
                onEvent=self.onProcessEvent, targetClass=parameters.targetClass or None,
                device=parameters.device, keepProbabilities=parameters.keepProbabilities,
                display={"opacity": parameters.attentionOpacity, "threshold": parameters.attentionThreshold,
                         "colorMap": parameters.colorMap, "showLegend": parameters.showLegend})
        except Exception as err:  # noqa: BLE001 - bad input or no worker: said in the panel, never a traceback
            logger.exception("the segmentation did not start")
            self.state.runNotStarted(str(err))
            self.refresh()
            slicer.util.errorDisplay(_("Failed to start the segmentation: {error}").format(error=err))
            return
        self._startTime = time.monotonic()
        self.ui.progressBar.value = 0
        self.state.runStarted()
        self.startPolling()
        self.onParameterNodeModified()

    def onProcessEvent(self, event, info) -> None:
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
            inference = result.summary.get("timings", {}).get("total_s", 0.0)
            self.state.runFinished(_("Done in {seconds:.1f} s ({inference:.1f} s inference on {device}): "
                                     "{segments} segments.").format(
                seconds=time.monotonic() - self._startTime, inference=inference,
                device=result.summary.get("device", "?"), segments=len(result.summary.get("segments", []))))
        elif event == ProcessEvent.CANCELLED:
            self.state.runCancelled()
        elif event == ProcessEvent.FAILED:
            self.state.runFailed(str(info.get("message")))
            slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=info.get("message")))
        if event in (ProcessEvent.FINISHED, ProcessEvent.CANCELLED, ProcessEvent.FAILED):
            self.onParameterNodeModified()
