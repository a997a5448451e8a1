"""``HybridAttentionSegLogic``: runs a catalog model on a volume node through the worker process, into MRML.

MRML only (no qt, ctk or ``slicer.ScriptedLoadableModule``), so it works inside Slicer, from its Python
console, and under plain ``slicer-core``::

    from HybridAttentionSegLib import HybridAttentionSegLogic
    logic = HybridAttentionSegLogic()
    result = logic.process(volumeNode, "mni-tissue-attention-unet")      # blocks; returns a ProcessResult
    result.segmentationNode, result.attentionNodes["gates"], result.tableNode

With ``waitForCompletion=False`` it returns at once; call :meth:`poll` periodically (the module widget does it
from a ``QTimer``) and :meth:`cancel` to stop. Inference runs in a separate process (:mod:`.worker`), so the
caller's thread never blocks on torch and a worker crash cannot take the scene down. Nothing is added to the
scene until the worker's result has arrived; a cancelled or failed run leaves the scene as it was. The Logic
never opens dialogs: it raises, or reports through ``onEvent(event: ProcessEvent, info: dict)``. Downloading
and importing models (:meth:`downloadModel`, :meth:`importModel`) come from :mod:`.catalog_logic`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import slicer

from ..core import errors
from ..core.errors import CancelledError, UserInputError
from ..worker.client import WorkerClient, WorkerError, cardByIdFrom
from . import outputs, transaction
from .catalog_logic import ModelCatalogLogic
from .events import ProcessEvent  # noqa: F401 (re-export: the Widget imports it from here)
from .inputs import inputVolumeProblem
from .options import checkDisplay, checkProcessOptions

ProcessResult = outputs.ProcessResult  # re-exported: what process() returns

logger = logging.getLogger(__name__)


class WorkerTaskError(RuntimeError):
    """The worker failed on a request for a reason that is not the user's input (a bug or a crash)."""


@dataclass
class SegmentationTask:
    """One run in flight (returned by ``process(..., waitForCompletion=False)``)."""

    requestId: str
    inputVolume: object
    modelId: str
    attentionMethods: list[str] | None
    outputSegmentation: object | None
    tempDir: Path
    onEvent: Callable | None
    display: dict
    state: ProcessEvent = ProcessEvent.STARTED
    percent: int = 0
    result: ProcessResult | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.state in (ProcessEvent.FINISHED, ProcessEvent.FAILED, ProcessEvent.CANCELLED)


class HybridAttentionSegLogic(ModelCatalogLogic):
    """Segmentation and attention overlays on MRML nodes, computed by a resident worker process.

    Args:
        workerClient: the worker connection (default: a new :class:`WorkerClient`; inject one in tests).
        catalogFiles: extra model-card files, sent with every request (``HYBRIDSEG_CATALOG`` also works).
    """

    def __init__(self, workerClient: WorkerClient | None = None, catalogFiles: list[str] | None = None):
        self.worker = workerClient or WorkerClient()
        self.catalogFiles = [str(p) for p in (catalogFiles or [])]
        self.task: SegmentationTask | None = None
        self.environment: dict | None = None
        self._pending: dict[str, Callable] = {}
        self._onProgress: dict[str, Callable] = {}

    # ------------------------------------------------------------------------------------ public API
    @property
    def isRunning(self) -> bool:
        """True while a segmentation is in flight."""
        return self.task is not None and not self.task.done

    @property
    def busy(self) -> bool:
        """True while a segmentation or another worker request is in flight."""
        return self.isRunning or bool(self._pending)

    def process(self, inputVolume, modelId: str, attentionMethods=None, outputSegmentation=None,
                waitForCompletion: bool = True, onEvent: Callable | None = None, *,
                targetClass: str | None = None, device: str = "auto", keepProbabilities: bool = True,
                display: dict | None = None, timeout: float | None = None, allowUnfaithful: bool = False):
        """Segment ``inputVolume`` with catalog model ``modelId`` and show the attention maps.

        :param inputVolume: scalar volume node; outputs go into its scene, on its exact grid.
        :param modelId: catalog model id.
        :param attentionMethods: method names; None means the model's natural method, [] none.
        :param outputSegmentation: segmentation node to update (only this model's segments are replaced);
            None creates a new node.
        :param waitForCompletion: block until done (returns a :class:`ProcessResult`); otherwise return the
            :class:`SegmentationTask` at once and let the caller :meth:`poll`.
        :param onEvent: ``onEvent(ProcessEvent, info dict)`` for progress, logs and the outcome.
        :param targetClass: segment name for class-dependent maps (default: the largest structure).
        :param device: ``auto``, ``cpu`` or ``cuda[:N]``.
        :param keepProbabilities: keep per-class probabilities as a vector volume (for correction).
        :param display: attention display: ``opacity``, ``threshold``, ``colorMap``, ``showLegend``.
        :param timeout: seconds to wait when blocking; the run is cancelled past it.
        :param allowUnfaithful: compute maps the card withholds (failed its faithfulness test; still labelled).
        :raises UserInputError: bad inputs, unknown model or method (also from the worker).
        :raises CancelledError: the run was cancelled (blocking mode).
        """
        self._checkInputs(inputVolume, modelId, outputSegmentation)
        # every option is checked before the worker starts: nothing fails after minutes of inference
        attentionMethods = checkProcessOptions(attentionMethods, targetClass, device, keepProbabilities, timeout,
                                               allowUnfaithful)
        display = checkDisplay(display)
        if self.isRunning:
            message = "a segmentation is already running; wait for it or cancel it first"
            raise RuntimeError(message)
        tempDir = Path(tempfile.mkdtemp(prefix="hybridseg-"))  # private (0700); no patient data in names
        try:
            inputPath = tempDir / "input.nrrd"
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(str(inputPath))
            storage.SetUseCompression(0)
            if not storage.WriteData(inputVolume):
                message = (f"could not write the input volume to the temporary folder {tempDir}; "
                           "check free disk space")
                raise RuntimeError(message)
            requestId = self.worker.send(
                "segment", model=modelId, input=str(inputPath), out_dir=str(tempDir / "out"), stem="result",
                attention=list(attentionMethods) if attentionMethods is not None else None,
                target_class=targetClass or None, device=device, probabilities=bool(keepProbabilities),
                catalog=self.catalogFiles or None, allow_unfaithful=allowUnfaithful)
        except BaseException:
            shutil.rmtree(tempDir, ignore_errors=True)
            raise
        self.task = SegmentationTask(requestId, inputVolume, modelId,
                                     list(attentionMethods) if attentionMethods is not None else None,
                                     outputSegmentation, tempDir, onEvent, dict(display or {}))
        self._emit(self.task, ProcessEvent.STARTED, {"model": modelId})
        if not waitForCompletion:
            return self.task
        return self.waitForTask(self.task, timeout)

    def waitForTask(self, task: SegmentationTask, timeout: float | None = None) -> ProcessResult:
        """Poll until ``task`` is done; return its result or raise its error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not task.done:
            self.poll(0.05)
            if deadline is not None and time.monotonic() > deadline and not task.done:
                self.cancel()
                message = f"segmentation did not finish within {timeout:g} s and was cancelled"
                raise TimeoutError(message)
        if task.state == ProcessEvent.CANCELLED:
            raise CancelledError("segmentation cancelled by the user")
        if task.state == ProcessEvent.FAILED:
            raise task.error
        return task.result

    def poll(self, timeout: float = 0.0) -> bool:
        """Handle the worker's events (waiting up to ``timeout`` s for the first); True while still busy."""
        first = self.worker.waitEvent(timeout) if timeout > 0 else None
        for event in ([first] if first else []) + self.worker.pollEvents():
            self._dispatch(event)
        return self.busy

    def cancel(self) -> bool:
        """Cancel the running segmentation, else the pending requests (a download, an import): the worker
        process tree is killed (within 2 s); the scene is not touched. The next request starts a fresh worker.
        Returns False if nothing was running."""
        task = self.task
        if task is None or task.done:
            if not self._pending:
                return False
            self.worker.stop()
            self._failPending(CancelledError("cancelled by the user"))
            return True
        self.worker.stop()
        self._failPending(CancelledError("cancelled by the user"))
        task.state = ProcessEvent.CANCELLED
        shutil.rmtree(task.tempDir, ignore_errors=True)
        self._emit(task, ProcessEvent.CANCELLED, {})
        return True

    def shutdown(self) -> None:
        """Stop the worker (module cleanup, application exit)."""
        if self.isRunning:
            self.cancel()
        self.worker.close()

    def fetchEnvironment(self, onDone: Callable | None = None, waitForCompletion: bool = True,
                         timeout: float = 300.0) -> dict | None:
        """The model catalog, compute devices and versions, as the worker sees them (it owns torch).

        Blocking by default; with ``waitForCompletion=False``, ``onDone(data, error)`` is called from
        :meth:`poll`.
        """
        def finished(data, error):
            if data is not None:
                self.environment = data
            if onDone is not None:
                onDone(data, error)

        data = self.request("info", onDone=finished, waitForCompletion=waitForCompletion, timeout=timeout)
        return data if waitForCompletion else None

    def loadSampleData(self, modelId: str, scene=None, timeout: float = 300.0):
        """Load ``modelId``'s sample volume (card ``sample_data``) as a new scalar volume node; blocking."""
        if self.isRunning:
            message = "a segmentation is running; load sample data when it has finished"
            raise RuntimeError(message)
        scene = scene or slicer.mrmlScene
        tempDir = Path(tempfile.mkdtemp(prefix="hybridseg-"))
        try:
            data = self.request("sample", {"model": modelId, "out_dir": str(tempDir)}, timeout=timeout)
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(data["name"]))
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(data["path"])
            if not storage.ReadData(node):
                scene.RemoveNode(node)
                message = f"Slicer could not read the sample volume of {modelId}; load your own volume"
                raise RuntimeError(message)
            node.CreateDefaultDisplayNodes()
            return node
        finally:
            shutil.rmtree(tempDir, ignore_errors=True)

    def card(self, modelId: str) -> dict | None:
        """The catalog card (JSON form) of ``modelId`` from the last :meth:`fetchEnvironment`."""
        return cardByIdFrom(self.environment, modelId)

    def updateAttentionDisplay(self, segmentationNode, method: str | None = None, opacity: float = 0.5,
                               threshold: float = 0.2, colorMap: str = "Inferno",
                               showLegend: bool = True) -> bool:
        """Show ``segmentationNode``'s attention map for ``method`` (default: the first) with these settings.

        Returns False (and hides attention overlays) if that map was not computed.
        """
        nodes = outputs.attentionNodes(segmentationNode)
        node = nodes.get(method) if method else next(iter(nodes.values()), None)
        if node is None:
            outputs.hideAttention(segmentationNode.GetScene())
            return False
        background = segmentationNode.GetNodeReference(outputs.INPUT_ROLE)
        outputs.showAttention(node, background, opacity=opacity, threshold=threshold, colorMap=colorMap,
                              showLegend=showLegend)
        return True

    def request(self, cmd: str, fields: dict | None = None, onDone: Callable | None = None,
                onProgress: Callable | None = None, waitForCompletion: bool = True, timeout: float = 300.0):
        """Send a worker request other than ``segment`` (the catalog files go with it).

        Blocking (default): return the answer's data or raise its error. Otherwise return the request id at
        once. Either way ``onDone(data, error)`` and ``onProgress({"stage", "done", "total", "percent"})``
        are called from :meth:`poll`.
        """
        box = {}
        requestId = self.worker.send(cmd, catalog=self.catalogFiles or None, **(fields or {}))

        def finished(data, error):
            self._onProgress.pop(requestId, None)
            box.update(data=data, error=error)
            if onDone is not None:
                onDone(data, error)

        self._pending[requestId] = finished
        if onProgress is not None:
            self._onProgress[requestId] = onProgress
        if not waitForCompletion:
            return requestId
        deadline = time.monotonic() + timeout
        while requestId in self._pending:
            self.poll(0.05)
            if time.monotonic() > deadline and requestId in self._pending:
                self._pending.pop(requestId, None)
                self._onProgress.pop(requestId, None)
                message = (f"the inference worker did not answer within {timeout:g} s; "
                           f"{self.worker.lastErrors()}")
                raise TimeoutError(message)
        if box["error"] is not None:
            raise box["error"]
        return box["data"]

    # ------------------------------------------------------------------------------------ internals
    @staticmethod
    def _checkInputs(inputVolume, modelId, outputSegmentation) -> None:
        if inputVolume is None or not inputVolume.IsA("vtkMRMLScalarVolumeNode"):
            message = "no input volume; select a scalar (image) volume node as input"
            raise UserInputError(message)
        problem = inputVolumeProblem(inputVolume)
        if problem:
            raise UserInputError(problem)
        if inputVolume.GetScene() is None or inputVolume.GetImageData() is None:
            message = f"input volume {inputVolume.GetName()!r} has no image data; load the volume again"
            raise UserInputError(message)
        if not modelId:
            message = "no model selected; choose a model from the catalog"
            raise UserInputError(message)
        if outputSegmentation is not None and (
                not outputSegmentation.IsA("vtkMRMLSegmentationNode")
                or outputSegmentation.GetScene() is not inputVolume.GetScene()):
            message = "the output must be a segmentation node in the input's scene; select one or create new"
            raise UserInputError(message)

    def _emit(self, task: SegmentationTask, event: ProcessEvent, info: dict) -> None:
        if task.onEvent is None:
            return
        try:
            task.onEvent(event, info)
        except Exception:  # noqa: BLE001 - an observer's bug must not corrupt the run's state
            logger.exception("onEvent callback failed for %s", event.value)

    def _dispatch(self, event: dict) -> None:
        kind, requestId = event.get("type"), event.get("id")
        task = self.task if self.isRunning and requestId == self.task.requestId else None
        if kind == "log":
            level = getattr(logging, str(event.get("level", "INFO")).upper(), logging.INFO)
            logger.log(level, "worker: %s", event.get("message"))
            if task is not None:
                self._emit(task, ProcessEvent.LOG,
                           {"level": event.get("level"), "message": event.get("message")})
        elif kind == "progress":
            info = {key: event.get(key) for key in ("stage", "done", "total", "percent")}
            if task is not None:
                task.percent = int(event.get("percent", 0))
                self._emit(task, ProcessEvent.PROGRESS, info)
            elif requestId in self._onProgress:
                self._onProgress[requestId](info)
        elif kind == "exit":
            message = (f"the inference worker stopped unexpectedly (exit code {event.get('returncode')}); "
                       f"{self.worker.lastErrors()}")
            self.worker.stop()
            error = WorkerError(message)
            self._failPending(error)
            if self.isRunning:
                self._fail(self.task, error)
        elif kind in ("result", "error"):
            error = _errorFromEvent(event) if kind == "error" else None
            if task is not None and error is not None:
                self._fail(task, error)
            elif task is not None:
                self._finish(task, event.get("data") or {})
            elif requestId in self._pending:
                self._pending.pop(requestId)(event.get("data"), error)
            elif error is not None:
                logger.error("worker error: %s", error)
        elif kind == "ready":
            logger.info("inference worker ready (pid %s)", event.get("pid"))

    def _failPending(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        self._onProgress = {}
        for callback in pending.values():
            callback(None, error)

    def _fail(self, task: SegmentationTask, error: BaseException) -> None:
        task.error = error
        task.state = ProcessEvent.FAILED
        shutil.rmtree(task.tempDir, ignore_errors=True)
        self._emit(task, ProcessEvent.FAILED, {"error": error, "message": str(error)})

    def _finish(self, task: SegmentationTask, summary: dict) -> None:
        self._emit(task, ProcessEvent.IMPORTING, {})
        try:
            task.result = transaction.importResult(task.inputVolume, summary, task.outputSegmentation,
                                               task.attentionMethods, task.display)
        except Exception as err:  # noqa: BLE001 - reported as FAILED (and raised by waitForTask)
            logger.exception("importing the result failed")
            self._fail(task, err)
            return
        task.state = ProcessEvent.FINISHED
        shutil.rmtree(task.tempDir, ignore_errors=True)
        self._emit(task, ProcessEvent.FINISHED, {"result": task.result})


def _errorFromEvent(event: dict) -> BaseException:
    message = event.get("message") or "unknown error"
    if event.get("user_error"):
        # the worker's class when it is one of ours (ChecksumError, DownloadError, ...), else UserInputError
        kind = getattr(errors, str(event.get("kind")), None)
        isOurs = isinstance(kind, type) and issubclass(kind, UserInputError)
        return (kind if isOurs else UserInputError)(message)
    if event.get("traceback"):
        logger.error("worker traceback:\n%s", event["traceback"])
    return WorkerTaskError(f"inference failed in the worker ({event.get('kind')}): {message}")
