"""The module panel's state object (``gui/panel_state.py``), without Slicer, Qt or torch.

Drives :class:`PanelState` through every transition the Widget reports (dependencies missing -> install ->
catalog loading -> ready -> running -> done / failed / cancelled, plus catalog failures, a run queued while
the catalog loads, and install failures), and checks after every step that Apply is never a dead end: it is
either enabled with the action that moves on, or disabled with a reason that names the fix. The installer's
failure path runs a real pip subprocess; the one-binding-per-node rule runs on real slicer-core nodes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from HybridAttentionSegLib.gui.install import DependencyInstaller, InstallError
from HybridAttentionSegLib.gui.panel_state import Action, Inputs, PanelState, Phase

READY_INPUTS = Inputs(hasInputVolume=True, modelId="mni-tissue-attention-unet")
NO_VOLUME = Inputs(hasInputVolume=False, modelId="mni-tissue-attention-unet")
NO_MODEL = Inputs(hasInputVolume=True, modelId="")
#: the fix each disabled reason must name (a disabled Apply is only fine when it says what to do)
FIXES = ("Select an input volume", "Select a model", "Import model", "wait for it or cancel it", "Installing")


def _assert_not_a_dead_end(state: PanelState, inputs: Inputs) -> None:
    button = state.applyButton(inputs)
    if button.enabled:
        assert button.action is not Action.NONE, (state.phase, button)
    else:
        assert button.action is Action.NONE
        assert any(fix in button.toolTip for fix in FIXES), (state.phase, button.toolTip)


def _every_inputs():
    return (READY_INPUTS, NO_VOLUME, NO_MODEL, Inputs(True, "m", catalogBusy=True))


def _ready_state() -> PanelState:
    state = PanelState([])
    assert state.dependenciesChecked([]) is Action.LOAD_CATALOG
    state.catalogRequested()
    assert state.catalogLoaded(5, READY_INPUTS) is Action.NONE
    return state


def test_first_run_without_torch_offers_the_install_not_a_disabled_apply():
    state = PanelState(["torch>=2.10", "monai>=1.6"])
    assert state.phase is Phase.DEPENDENCIES_MISSING
    for inputs in (*_every_inputs(), Inputs()):  # also before any volume or model exists
        button = state.applyButton(inputs)
        assert button.enabled and button.action is Action.INSTALL
        assert button.text == "Install dependencies..."
        assert "torch>=2.10" in button.toolTip and "monai>=1.6" in button.toolTip
    assert "Click Install dependencies" in state.status
    assert not state.canRequestCatalog  # the worker's catalog imports torch: asking now can only fail
    assert state.applyPressed(Inputs()) is Action.INSTALL


def test_install_succeeds_then_catalog_then_run_then_done():
    state = PanelState(["torch>=2.10"])
    state.installStarted()
    assert state.phase is Phase.INSTALLING and not state.inputsEnabled
    assert state.applyButton(READY_INPUTS).enabled is False
    _assert_not_a_dead_end(state, READY_INPUTS)
    assert state.installFinished([], None) is Action.LOAD_CATALOG
    state.catalogRequested()
    assert state.phase is Phase.CATALOG_LOADING and state.status == "Loading the model catalog..."
    assert state.catalogLoaded(3, READY_INPUTS) is Action.NONE
    assert state.phase is Phase.READY and state.status == "3 models available."
    assert state.applyPressed(READY_INPUTS) is Action.RUN
    state.runStarted()
    assert state.phase is Phase.RUNNING and state.progressVisible and not state.inputsEnabled
    button = state.applyButton(READY_INPUTS)
    assert (button.text, button.enabled, button.action) == ("Cancel", True, Action.CANCEL)
    state.runFinished("Done in 4.2 s")
    assert state.phase is Phase.DONE and state.status == "Done in 4.2 s" and state.inputsEnabled
    assert state.applyPressed(READY_INPUTS) is Action.RUN  # ready for the next run


@pytest.mark.parametrize("error", ["PyTorch was not installed (cancelled); it is needed to run the models",
                                   "installing monai>=1.6 failed (pip exit code 1); see the Python console"])
def test_install_declined_or_failed_keeps_offering_the_install(error):
    state = PanelState(["torch>=2.10", "monai>=1.6"])
    state.installStarted()
    assert state.installFinished(["monai>=1.6"], error) is Action.NONE
    assert state.phase is Phase.DEPENDENCIES_MISSING
    assert state.status.startswith("Install failed: " + error) and "try again" in state.status
    button = state.applyButton(READY_INPUTS)
    assert button.enabled and button.action is Action.INSTALL and "monai>=1.6" in button.toolTip
    assert "torch" not in button.toolTip  # what is still missing, not what was missing before


def test_install_that_leaves_packages_missing_says_which():
    state = PanelState(["monai>=1.6"])
    state.installStarted()
    assert state.installFinished(["monai>=1.6"]) is Action.NONE
    assert "still missing: monai>=1.6" in state.status and state.phase is Phase.DEPENDENCIES_MISSING


def test_apply_pressed_while_the_catalog_is_loading_queues_the_run_without_blocking():
    state = PanelState([])
    state.catalogRequested()
    button = state.applyButton(NO_MODEL)  # the model list is not there yet: the model is not needed to queue
    assert button.enabled and button.action is Action.QUEUE_RUN and "starts as soon as" in button.toolTip
    assert state.applyPressed(NO_MODEL) is Action.QUEUE_RUN  # returns at once: nothing waits on the worker
    assert state.runQueued and state.phase is Phase.CATALOG_LOADING
    assert state.applyButton(NO_MODEL).action is Action.UNQUEUE_RUN
    # the catalog arrives and fills the model list: the queued run starts
    assert state.catalogLoaded(2, READY_INPUTS) is Action.RUN
    assert not state.runQueued
    state.runStarted()
    assert state.phase is Phase.RUNNING


def test_a_queued_run_can_be_withdrawn_and_does_not_start():
    state = PanelState([])
    state.catalogRequested()
    state.applyPressed(READY_INPUTS)
    assert state.applyPressed(READY_INPUTS) is Action.UNQUEUE_RUN
    assert not state.runQueued and "withdrawn" in state.status
    assert state.catalogLoaded(2, READY_INPUTS) is Action.NONE and state.phase is Phase.READY


def test_a_queued_run_that_cannot_start_says_why():
    state = PanelState([])
    state.catalogRequested()
    state.applyPressed(READY_INPUTS)
    assert state.catalogLoaded(0, NO_MODEL) is Action.NONE  # an empty catalog: no model to select
    assert "did not start" in state.status and "Import model" in state.status
    assert state.phase is Phase.READY and not state.runQueued


def test_a_queued_run_is_dropped_when_the_catalog_fails():
    state = PanelState([])
    state.catalogRequested()
    state.applyPressed(READY_INPUTS)
    state.catalogFailed("the inference worker stopped unexpectedly (exit code 1)")
    assert state.phase is Phase.CATALOG_FAILED and not state.runQueued
    assert "exit code 1" in state.status and "Load models" in state.status
    button = state.applyButton(READY_INPUTS)
    assert button.enabled and button.action is Action.LOAD_CATALOG and button.text == "Load models"


def test_catalog_failure_after_a_good_catalog_keeps_the_panel_ready():
    state = _ready_state()
    state.catalogRequested()  # a refresh after a download
    state.catalogFailed("timeout")
    assert state.phase is Phase.READY and state.applyPressed(READY_INPUTS) is Action.RUN


def test_run_failed_cancelled_and_not_started_leave_apply_usable():
    for finish, phase in ((lambda s: s.runFailed("CUDA out of memory"), Phase.FAILED),
                          (lambda s: s.runCancelled(), Phase.CANCELLED)):
        state = _ready_state()
        state.applyPressed(READY_INPUTS)
        state.runStarted()
        finish(state)
        assert state.phase is phase and state.inputsEnabled and not state.progressVisible
        assert state.applyPressed(READY_INPUTS) is Action.RUN
        if phase is Phase.FAILED:
            assert state.status == "Failed: CUDA out of memory"
    state = _ready_state()
    state.runNotStarted("input volume 'x' has no image data; load the volume again")
    assert state.phase is Phase.FAILED and "load the volume again" in state.status
    assert state.applyButton(READY_INPUTS).action is Action.RUN


def test_disabled_apply_always_names_the_fix():
    state = _ready_state()
    expectations = {NO_VOLUME: "Select an input volume", NO_MODEL: "Select a model.",
                    Inputs(True, "m", catalogBusy=True): "wait for it or cancel it"}
    for inputs, fix in expectations.items():
        button = state.applyButton(inputs)
        assert not button.enabled and fix in button.toolTip
        assert state.applyPressed(inputs) is Action.NONE and fix in state.status  # pressing explains it
    empty = PanelState([])
    empty.catalogRequested()
    empty.catalogLoaded(0, NO_MODEL)
    assert "Import model" in empty.applyButton(NO_MODEL).toolTip


def test_entering_again_checks_the_packages_and_loads_the_catalog_once():
    state = PanelState(["torch>=2.10"])
    assert state.dependenciesChecked(["torch>=2.10"]) is Action.NONE  # still missing (entering again)
    assert state.dependenciesChecked([]) is Action.LOAD_CATALOG  # installed from the Python console
    state.catalogRequested()
    assert state.dependenciesChecked([]) is Action.NONE  # already loading: no second request
    state.catalogLoaded(2, READY_INPUTS)
    assert state.dependenciesChecked([]) is Action.NONE and state.phase is Phase.READY
    state.applyPressed(READY_INPUTS)
    state.runStarted()
    assert state.dependenciesChecked(["monai>=1.6"]) is Action.NONE and state.phase is Phase.RUNNING
    state.runFinished("done")
    assert state.dependenciesChecked(["monai>=1.6"]) is Action.NONE  # uninstalled meanwhile: offer the install
    assert state.phase is Phase.DEPENDENCIES_MISSING
    assert state.applyButton(READY_INPUTS).action is Action.INSTALL
    assert state.dependenciesChecked([]) is Action.NONE and state.phase is Phase.READY  # the catalog is kept


def test_no_phase_is_a_dead_end():
    """Every phase the panel can reach, with every kind of missing input, passes the dead-end rule."""
    state = PanelState(["torch"])
    reached = {state.phase}
    for step in (lambda s: s.installStarted(), lambda s: s.installFinished([]), lambda s: s.catalogRequested(),
                 lambda s: s.catalogFailed("x"), lambda s: s.catalogRequested(),
                 lambda s: s.catalogLoaded(1, READY_INPUTS), lambda s: s.runStarted(), lambda s: s.runFinished("ok"),
                 lambda s: s.runStarted(), lambda s: s.runFailed("x"), lambda s: s.runStarted(),
                 lambda s: s.runCancelled()):
        step(state)
        for inputs in _every_inputs():
            _assert_not_a_dead_end(state, inputs)
        reached.add(state.phase)
    assert reached | {Phase.CATALOG_NOT_LOADED} == set(Phase)
    fresh = PanelState([])
    assert fresh.phase is Phase.CATALOG_NOT_LOADED and fresh.applyButton(Inputs()).action is Action.LOAD_CATALOG


# --- the installer's failure path (audit #4): a real, failing pip run becomes an InstallError ----------------
def _failing_pip(requirements):
    # --no-index: pip looks for the package offline and exits 1 (a real CalledProcessError, no network)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check",
                    "--quiet", *requirements], check=True, capture_output=True, timeout=120)


def test_a_failed_pip_run_becomes_a_message_and_the_panel_offers_the_install_again():
    requirement = "hybridseg-surely-not-installed-package>=1"
    asked = []
    installer = DependencyInstaller(confirm=lambda text: asked.append(text) or True, requirements=[requirement],
                                    pipInstall=_failing_pip)
    state = PanelState(installer.missing())
    assert state.applyPressed(Inputs()) is Action.INSTALL
    state.installStarted()
    with pytest.raises(InstallError) as caught:
        installer.ensure()
    message = str(caught.value)
    assert requirement in message and "pip exit code 1" in message and "Install dependencies again" in message
    assert isinstance(caught.value.__cause__, subprocess.CalledProcessError)
    assert asked and requirement in asked[0]  # asked before installing
    state.installFinished(installer.missing(), message)
    assert state.phase is Phase.DEPENDENCIES_MISSING and message in state.status
    assert state.applyButton(Inputs()).action is Action.INSTALL


def test_a_declined_install_runs_no_pip():
    ran = []
    installer = DependencyInstaller(confirm=lambda text: False, requirements=["hybridseg-surely-missing>=1"],
                                    pipInstall=ran.append)
    with pytest.raises(InstallError, match="cancelled"):
        installer.ensure()
    assert ran == []


def test_nothing_to_install_asks_nothing():
    installer = DependencyInstaller(confirm=lambda text: pytest.fail("asked"), requirements=["pytest>=1"],
                                    pipInstall=lambda r: pytest.fail("installed"))
    installer.ensure()  # pytest is installed: returns at once


# --- one GUI binding per parameter node (audit #6) ----------------------------------------------------------
class _Wrapper:
    """What the Widget gets from ``logic.getParameterNode()``: a new wrapper object around the MRML node."""

    def __init__(self, node):
        self.parameterNode = node


def test_entering_and_leaving_the_module_connects_the_gui_once_per_node():
    import slicer
    from HybridAttentionSegLib.gui.parameter_binding import ParameterNodeBinding

    calls = []
    binding = ParameterNodeBinding(lambda wrapper: calls.append(("connect", wrapper)) or len(calls),
                                   lambda wrapper, tags: calls.append(("disconnect", wrapper, tags)))
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    first = _Wrapper(node)
    assert binding.bind(first) is True
    for _ in range(20):  # enter/exit: every enter makes a new wrapper of the same node
        assert binding.bind(_Wrapper(node)) is False
    assert calls == [("connect", first)] and binding.wrapper is first
    assert binding.bind(None) is True  # scene close: the node goes away
    assert calls[-1] == ("disconnect", first, 1)
    other = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    assert binding.bind(_Wrapper(other)) is True and len(calls) == 3
    assert binding.bind(None) is True and binding.bind(None) is False and len(calls) == 4
