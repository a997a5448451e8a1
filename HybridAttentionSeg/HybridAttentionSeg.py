"""HybridAttentionSeg: hybrid CNN-transformer segmentation with attention-map overlays (3D Slicer >= 5.10).

The module shell, in Slicer's template shape. The Widget only binds the panel
(``Resources/UI/HybridAttentionSeg.ui``) to the typed parameter node (``HybridAttentionSegLib/gui/parameters.py``)
and hands the panel to ``HybridAttentionSegLib/gui/main_panel.py``, which shows the Qt-free panel state
(``gui/panel_state.py``: dependencies missing -> install -> catalog loading -> ready -> running -> done) and calls
the MRML-only Logic (``HybridAttentionSegLib/mrml/logic.py``). Inference runs in a worker process polled from a
``QTimer``, so Slicer never freezes and Apply turns into Cancel while a run is in flight.
"""

import importlib
import sys

import slicer
from HybridAttentionSegLib.gui import self_test
from HybridAttentionSegLib.gui.install import DependencyInstaller
from HybridAttentionSegLib.gui.main_panel import MainPanel
from HybridAttentionSegLib.gui.parameter_binding import ParameterNodeBinding
from HybridAttentionSegLib.gui.parameters import HybridAttentionSegParameterNode, connectGui, disconnectGui
from HybridAttentionSegLib.mrml.logic import HybridAttentionSegLogic as MRMLLogic
from HybridAttentionSegLib.mrml.logic import inputVolumeProblem
from HybridAttentionSegLib.mrml.sample_data import registerSampleData
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: the project page (the repository; Testing/pytest/test_extension_metadata.py keeps every URL consistent)
HOMEPAGE = "https://github.com/hybridattentionseg/SlicerHybridAttentionSeg"

class HybridAttentionSeg(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Hybrid Attention Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # modules whose logic, widgets or nodes are used: clicks (Markups), segments, the editor hand-off, samples
        self.parent.dependencies = ["Markups", "Segmentations", "SegmentEditor", "SampleData"]
        self.parent.contributors = ["HybridAttentionSeg developers (HybridAttentionSeg project)"]
        self.parent.helpText = _(
            "Segment a volume with a hybrid CNN-transformer model (UNETR, SwinUNETR, Attention U-Net, "
            "TransUNet-style, CNN + self-attention) from the model catalog, and show where the model looked: "
            "attention maps (gates, rollout, window attention, Grad-CAM, uncertainty) as a colour-mapped "
            "overlay with a legend. Segments carry standard (SNOMED-CT) terminology and the input's "
            "geometry, so they export to DICOM SEG. Inference runs in a background process: Slicer stays "
            "responsive and Apply turns into Cancel while it runs.<br>"
            'See the <a href="{link}">project page</a> for the model cards and the user guide.').format(
            link=HOMEPAGE)
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
    """Binds the .ui to the parameter node and hands the panel to :class:`MainPanel`; nothing else.

    ``logic`` and ``installer`` can be injected (tests, other modules).
    """

    def __init__(self, parent=None, logic=None, installer=None):
        # Set before the base class: without a parent it calls setup() from its __init__.
        self.logic = logic
        self.installer = installer
        self.panel = None
        self._binding = ParameterNodeBinding(lambda node: connectGui(node, self.ui), disconnectGui)
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    @property
    def _parameterNode(self):
        return self._binding.wrapper

    def setup(self):
        """Called once, when the module panel is first shown."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/HybridAttentionSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or HybridAttentionSegLogic()
        self.installer = self.installer or DependencyInstaller(
            confirm=lambda text: slicer.util.confirmOkCancelDisplay(text, windowTitle=_("Install dependencies")))
        self.panel = MainPanel(self.ui, self.logic, self.installer)
        self.panel.setup()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()
        self.setParameterNode(None)
        if self.panel is not None:
            self.panel.cleanup()
        if self.logic is not None:
            self.logic.shutdown()

    def enter(self):
        """Called each time the user opens this module: bind the panel (once per node), check, list models."""
        self.initializeParameterNode()
        self.panel.enter(self._parameterNode)

    def exit(self):
        """Called each time the user opens another module; the widgets stay bound (see ParameterNodeBinding)."""
        self.panel.exit()

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            self._parameterNode.inputVolume = next((v for v in volumes if not inputVolumeProblem(v)), None)

    def setParameterNode(self, parameterNode):
        """Connect the .ui to ``parameterNode``'s MRML node, unless it is the one already connected."""
        if self._binding.bind(parameterNode):
            self.panel.setParameterNode(self._binding.wrapper)

    def onReload(self):
        """Reload the Slicer-side Lib modules too (developer mode), then the module itself; the core runs in
        the worker, which restarts anyway."""
        if self.logic is not None:
            self.logic.shutdown()
        # each after the modules it imports (Testing/pytest/test_module_structure.py checks the list and its order)
        for name in ("worker.client", "mrml.events", "mrml.rendering", "mrml.options", "mrml.outputs",
                     "mrml.transaction", "mrml.correction_masks", "mrml.correction", "mrml.catalog_logic",
                     "mrml.inputs", "mrml.logic", "mrml.sample_data", "mrml.demo_render",
                     "gui.model_info", "gui.install", "gui.parameters", "gui.panel_state", "gui.parameter_binding",
                     "gui.catalog_panel", "gui.correction_panel", "gui.main_panel", "gui.self_test"):
            module = sys.modules.get(f"HybridAttentionSegLib.{name}")
            if module is not None:
                importlib.reload(module)
        super().onReload()


class HybridAttentionSegTest(self_test.SelfTest):
    """The module's self-test, found by name by Slicer's test runner (``HybridAttentionSegLib/gui/self_test.py``)."""
