"""What the module panel is doing, and what its Apply button offers: a Qt-free state object.

The Widget (``HybridAttentionSeg.py`` with :mod:`.main_panel`) only binds this object to the ``.ui``: it
reports what happened (dependencies checked, install finished, catalog loaded, run finished...), performs the
:class:`Action` it gets back, and shows :meth:`PanelState.applyButton` and :attr:`PanelState.status`. Every
decision lives here, so pytest drives it through every transition without Slicer, Qt or torch::

    dependencies missing --Install--> installing --ok--> catalog loading --> ready --Apply--> running
          ^                              |                  |       ^                         |
          +------- failed / declined ----+                  v       |        done / failed / cancelled
                                                   catalog failed --+ (Load models)   (ready for the next run)

Rules:

* Apply is never a dead end. Whenever something is missing the button offers the action that fixes it
  (install the Python packages, load the catalog again, withdraw a queued run), or it is disabled with a
  tooltip and a status that name the fix (select an input volume, pick or import a model, wait for a download).
* Nothing here blocks. Apply pressed while the catalog is loading *queues* the run; it starts when the
  catalog arrives (:meth:`PanelState.catalogLoaded` returns :attr:`Action.RUN`), or the status says why not.

Texts are marked with ``_()`` for Slicer's translation tools; outside the Slicer application they are shown
as written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

try:  # inside the Slicer application; slicer-core and plain Python have no slicer.i18n
    from slicer.i18n import tr as _slicerTr
except ImportError:
    _slicerTr = None


def _(text: str) -> str:
    """Slicer's ``tr`` when the application is there (same translation context: this file), else ``text``."""
    if _slicerTr is None:
        return text
    try:
        return _slicerTr(text)
    except ImportError:  # PythonSlicer: slicer.i18n exists, slicer.app does not
        return text


class Phase(enum.Enum):
    """Where the panel is."""

    DEPENDENCIES_MISSING = "dependencies-missing"
    INSTALLING = "installing"
    CATALOG_NOT_LOADED = "catalog-not-loaded"
    CATALOG_LOADING = "catalog-loading"
    CATALOG_FAILED = "catalog-failed"
    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: phases in which a run may start (a finished run leaves the panel ready for the next one)
RUNNABLE = (Phase.READY, Phase.DONE, Phase.FAILED, Phase.CANCELLED)
#: phases in which the worker must not get a catalog request (nothing to run it with, or a run owns it)
NO_CATALOG_REQUESTS = (Phase.DEPENDENCIES_MISSING, Phase.INSTALLING, Phase.RUNNING)


class Action(enum.Enum):
    """What the Widget has to do next (pressing Apply, or after an event)."""

    NONE = "none"
    INSTALL = "install"
    LOAD_CATALOG = "load-catalog"
    QUEUE_RUN = "queue-run"
    UNQUEUE_RUN = "unqueue-run"
    RUN = "run"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Inputs:
    """What the parameter node and the other sections say when the button is drawn or pressed.

    Attributes:
        hasInputVolume: an input volume is selected.
        modelId: the selected model ("" for none).
        catalogBusy: a download or an import is in flight (the worker is busy with it).
    """

    hasInputVolume: bool = False
    modelId: str = ""
    catalogBusy: bool = False


@dataclass(frozen=True)
class ApplyButton:
    """How the Apply button looks, and what pressing it does."""

    text: str
    enabled: bool
    toolTip: str
    action: Action


class PanelState:
    """The panel's state machine (see the module docstring).

    Args:
        missing: the requirement strings that are not installed (``DependencyInstaller.missing()``).
    """

    def __init__(self, missing: list[str] | None = None):
        self.phase = Phase.CATALOG_NOT_LOADED
        self.missing: list[str] = []
        self.runQueued = False
        self.hasCatalog = False
        self.modelCount = 0
        self.status = ""
        self.dependenciesChecked(missing or [])

    # ------------------------------------------------------------------------------------- views
    @property
    def inputsEnabled(self) -> bool:
        """Whether the input, output and correction sections accept changes (not while running/installing)."""
        return self.phase not in (Phase.RUNNING, Phase.INSTALLING)

    @property
    def progressVisible(self) -> bool:
        return self.phase is Phase.RUNNING

    @property
    def canRequestCatalog(self) -> bool:
        """Whether Refresh may send a catalog request now."""
        return self.phase not in NO_CATALOG_REQUESTS

    def applyButton(self, inputs: Inputs) -> ApplyButton:
        """The button for the current phase and ``inputs``."""
        phase = self.phase
        if phase is Phase.DEPENDENCIES_MISSING:
            return ApplyButton(_("Install dependencies..."), True, _(
                "Segmenting needs these Python packages: {packages}. Click to install them (you are asked "
                "first; nothing is installed without your consent).").format(packages=", ".join(self.missing)),
                Action.INSTALL)
        if phase is Phase.INSTALLING:
            return ApplyButton(_("Installing..."), False, _("Installing the Python packages..."), Action.NONE)
        if phase is Phase.RUNNING:
            return ApplyButton(_("Cancel"), True, _("Cancel the running segmentation"), Action.CANCEL)
        if phase is Phase.CATALOG_NOT_LOADED:
            return ApplyButton(_("Load models"), True, _("Load the model catalog"), Action.LOAD_CATALOG)
        if phase is Phase.CATALOG_FAILED:
            return ApplyButton(_("Load models"), True, _(
                "The model catalog could not be loaded (see the status line). Click to try again."),
                Action.LOAD_CATALOG)
        if phase is Phase.CATALOG_LOADING:
            if self.runQueued:
                return ApplyButton(_("Cancel queued run"), True, _(
                    "The segmentation starts as soon as the model catalog is loaded. Click to not start it."),
                    Action.UNQUEUE_RUN)
            reason = self._missingInput(inputs, needModel=False)
            if reason:
                return ApplyButton(_("Apply"), False, reason, Action.NONE)
            return ApplyButton(_("Apply"), True, _(
                "The model catalog is loading; the segmentation starts as soon as it is ready."), Action.QUEUE_RUN)
        reason = self._missingInput(inputs, needModel=True)
        if reason:
            return ApplyButton(_("Apply"), False, reason, Action.NONE)
        return ApplyButton(_("Apply"), True, _("Run the model on the input volume"), Action.RUN)

    def _missingInput(self, inputs: Inputs, needModel: bool) -> str:
        """Why a run cannot start with ``inputs``, naming what fixes it; "" when it can."""
        if inputs.catalogBusy:
            return _("A model download or import is running; wait for it or cancel it.")
        if not inputs.hasInputVolume:
            return _("Select an input volume (load one, or use Sample Data).")
        if needModel and not inputs.modelId:
            if self.modelCount == 0:
                return _("The catalog lists no model; add one with Import model...")
            return _("Select a model.")
        return ""

    # ------------------------------------------------------------------------------------- events
    def applyPressed(self, inputs: Inputs) -> Action:
        """The user pressed Apply: returns what the Widget must do (queueing is handled here)."""
        button = self.applyButton(inputs)
        if not button.enabled:
            self.status = button.toolTip
            return Action.NONE
        if button.action is Action.QUEUE_RUN:
            self.runQueued = True
            self.status = _("The segmentation will start when the model catalog is loaded.")
        elif button.action is Action.UNQUEUE_RUN:
            self.runQueued = False
            self.status = _("Queued segmentation withdrawn; the model catalog is still loading.")
        return button.action

    def dependenciesChecked(self, missing: list[str]) -> Action:
        """The Python packages were checked (entering the module, Refresh). LOAD_CATALOG when it is due."""
        if self.phase in (Phase.RUNNING, Phase.INSTALLING):
            return Action.NONE
        self.missing = list(missing)
        if self.missing:
            self.phase, self.runQueued = Phase.DEPENDENCIES_MISSING, False
            self.status = _("Python packages are missing: {packages}. Click Install dependencies to install "
                            "them.").format(packages=", ".join(self.missing))
            return Action.NONE
        if self.phase is Phase.DEPENDENCIES_MISSING:
            self.phase = Phase.READY if self.hasCatalog else Phase.CATALOG_NOT_LOADED
        if self.phase in (Phase.CATALOG_NOT_LOADED, Phase.CATALOG_FAILED):
            return Action.LOAD_CATALOG
        return Action.NONE

    def installStarted(self) -> None:
        self.phase = Phase.INSTALLING
        self.status = _("Installing the Python packages...")

    def installFinished(self, missing: list[str], error: str | None = None) -> Action:
        """The install returned: ``missing`` as checked afterwards, ``error`` why it failed or was declined.

        Returns LOAD_CATALOG when nothing is missing any more.
        """
        self.missing = list(missing)
        if self.missing:
            self.phase = Phase.DEPENDENCIES_MISSING
            reason = error or _("these packages are still missing: {packages}").format(
                packages=", ".join(self.missing))
            self.status = _("Install failed: {reason}. Click Install dependencies to try again.").format(
                reason=reason)
            return Action.NONE
        self.phase = Phase.READY if self.hasCatalog else Phase.CATALOG_NOT_LOADED
        self.status = error or _("Python packages installed.")
        return Action.LOAD_CATALOG

    def catalogRequested(self) -> None:
        """A catalog request was sent to the worker."""
        if self.phase not in NO_CATALOG_REQUESTS:
            self.phase = Phase.CATALOG_LOADING
        self.status = _("Loading the model catalog...")

    def catalogLoaded(self, modelCount: int, inputs: Inputs) -> Action:
        """The catalog arrived (``inputs`` as after filling the lists). RUN if a queued run can start now."""
        self.hasCatalog, self.modelCount = True, int(modelCount)
        if self.phase in (Phase.CATALOG_LOADING, Phase.CATALOG_NOT_LOADED, Phase.CATALOG_FAILED):
            self.phase = Phase.READY
        self.status = _("{count} models available.").format(count=self.modelCount)
        if not self.runQueued:
            return Action.NONE
        self.runQueued = False
        button = self.applyButton(inputs)
        if button.action is Action.RUN:
            return Action.RUN
        self.status = _("The queued segmentation did not start: {reason}").format(reason=button.toolTip)
        return Action.NONE

    def catalogFailed(self, message: str) -> None:
        """The catalog request failed (the worker could not start, or could not import its packages)."""
        self.runQueued = False
        if self.phase is Phase.CATALOG_LOADING:
            self.phase = Phase.READY if self.hasCatalog else Phase.CATALOG_FAILED
        self.status = _("Could not load the model catalog: {error}. Click Load models to try again.").format(
            error=message)

    def runStarted(self) -> None:
        self.phase, self.runQueued = Phase.RUNNING, False
        self.status = _("Starting the inference worker...")

    def runNotStarted(self, message: str) -> None:
        """Starting the run raised (bad input, the worker did not start): the panel stays usable."""
        self.runQueued = False
        self.phase = Phase.FAILED if self.hasCatalog else Phase.CATALOG_FAILED
        self.status = _("Could not start the segmentation: {error}").format(error=message)

    def runFinished(self, summary: str) -> None:
        self.phase = Phase.DONE
        self.status = summary

    def runFailed(self, message: str) -> None:
        self.phase = Phase.FAILED
        self.status = _("Failed: {message}").format(message=message)

    def runCancelled(self) -> None:
        self.phase = Phase.CANCELLED
        self.status = _("Cancelled; the scene was not changed.")
