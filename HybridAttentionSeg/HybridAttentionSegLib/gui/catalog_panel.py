"""The model-catalog controls of the module panel: Download (with progress; click again to cancel) and
"Import model..." (file dialogs).

Qt side: imported only inside Slicer, by the module widget. It shows state and calls the Logic
(:meth:`~.catalog_logic.ModelCatalogLogic.downloadModel`, :meth:`~.catalog_logic.ModelCatalogLogic.importModel`),
which hands the work to the worker process; the file dialogs live here because the Logic never opens any.
"""

from __future__ import annotations

import logging
from pathlib import Path

import qt
import slicer
from slicer.i18n import tr as _

from ..mrml import sample_data
from ..mrml.events import ProcessEvent
from . import model_info

logger = logging.getLogger(__name__)

WEIGHTS_FILTER = ("Model weights or MONAI bundle (*.safetensors *.pt *.pth *.ckpt *.bin *.zip *.tar *.tar.gz "
                  "*.tgz);;All files (*)")
CARD_FILTER = "Model card (*.json);;All files (*)"
#: files that may be a MONAI bundle (the importer tells bundles from weights by content; these need no card)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class CatalogPanel:
    """Binds ``downloadButton``, ``downloadProgressBar`` and ``importModelButton`` of the module's ``ui``.

    Args:
        ui: the module's ``childWidgetVariables`` namespace.
        logic: the module Logic (catalog requests and ``card``).
        host: the module widget: ``setStatus(text)``, ``startPolling()``, ``onRefreshModels()``,
            ``ensureDependencies() -> bool``, ``selectModel(modelId)`` and ``onParameterNodeModified()``.
    """

    def __init__(self, ui, logic, host):
        self.ui = ui
        self.logic = logic
        self.host = host
        self.downloading = False
        self.importing = False
        self._card: dict | None = None

    def setup(self) -> None:
        self.ui.downloadProgressBar.hide()
        self.ui.downloadButton.connect("clicked(bool)", self.onDownloadButton)
        menu = qt.QMenu(self.ui.importModelButton)
        menu.addAction(_("Weights file or bundle archive...")).connect("triggered()", self.onImportFile)
        menu.addAction(_("MONAI bundle folder...")).connect("triggered()", self.onImportFolder)
        self.ui.importModelButton.setMenu(menu)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportFile)

    @property
    def busy(self) -> bool:
        return self.downloading or self.importing

    def update(self, card: dict | None) -> None:
        """Show whether ``card``'s weights are present; Download turns into Cancel while downloading."""
        self._card = card
        button = self.ui.downloadButton
        self.ui.importModelButton.enabled = not self.busy and not self.logic.isRunning
        if self.downloading:
            button.text, button.enabled = _("Cancel download"), True
            button.toolTip = _("Stop the download (nothing partial is kept under the final name)")
            return
        present = bool(card) and bool(card.get("bundled") or card.get("downloaded"))
        button.text = _("Downloaded") if present else _("Download")
        button.enabled = bool(card) and not present and not self.importing and not self.logic.isRunning
        button.toolTip = _("Weights: {status}").format(status=model_info.weightsStatus(card)) if card else ""

    # ------------------------------------------------------------------------------------------ download
    def onDownloadButton(self) -> None:
        if self.downloading:
            self.logic.cancel()
            return
        if not self._card or not self.host.ensureDependencies():
            return
        modelId = self._card["id"]
        with slicer.util.tryWithErrorDisplay(_("Could not start the download."), waitCursor=True):
            self.logic.downloadModel(modelId, onEvent=self.onDownloadEvent, waitForCompletion=False)
            self._setDownloading(True)
            self.host.setStatus(_("Downloading the weights of {model}...").format(model=modelId))
            self.host.startPolling()

    def onDownloadEvent(self, event, info) -> None:
        bar = self.ui.downloadProgressBar
        if event == ProcessEvent.PROGRESS:
            done, total = int(info.get("done") or 0), int(info.get("total") or 0)
            bar.setRange(0, 100 if total else 0)  # unknown size: a busy bar
            bar.value = int(info.get("percent") or 0)
            bar.format = (_("{done:.0f} of {total:.0f} MB (%p%)").format(done=done / 1e6, total=total / 1e6)
                          if total else _("{done:.0f} MB").format(done=done / 1e6))
            return
        if event == ProcessEvent.STARTED:
            return
        self._setDownloading(False)
        model = info.get("model", "")
        if event == ProcessEvent.FINISHED:
            result = info.get("result") or {}
            state = _("already present") if result.get("already_downloaded") else _("downloaded")
            self.host.setStatus(_("Weights of {model} {state}: {size:.0f} MB, hash verified.").format(
                model=model, state=state, size=result.get("size_bytes", 0) / 1e6))
            self.host.onRefreshModels()  # the catalog now lists them as downloaded
        elif event == ProcessEvent.CANCELLED:
            self.host.setStatus(_("Download of {model} cancelled.").format(model=model))
        elif event == ProcessEvent.FAILED:
            message = info.get("message", "")
            self.host.setStatus(_("Download failed: {message}").format(message=message))
            slicer.util.errorDisplay(_("Download of {model} failed: {message}").format(model=model,
                                                                                        message=message))

    def _setDownloading(self, downloading: bool) -> None:
        self.downloading = downloading
        bar = self.ui.downloadProgressBar
        bar.setRange(0, 100)
        bar.value = 0
        bar.format = "%p%"
        bar.visible = downloading
        self.host.onParameterNodeModified()

    # ------------------------------------------------------------------------------------------ import
    def onImportFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Import model: weights or bundle"),
                                              "", WEIGHTS_FILTER)
        if not path:
            return
        cardPath = None
        if not path.lower().endswith(ARCHIVE_SUFFIXES):
            cardPath = qt.QFileDialog.getOpenFileName(
                slicer.util.mainWindow(), _("Model card for {name} (architecture, labels, preprocessing)").format(
                    name=Path(path).name), str(Path(path).parent), CARD_FILTER)
            if not cardPath:
                self.host.setStatus(_("Import cancelled: a weights file needs its model card (JSON). Copy one "
                                       "from `hybridseg models --json` and edit it."))
                return
        self.startImport(path, cardPath)

    def onImportFolder(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Import model: MONAI bundle "
                                                                              "folder"))
        if path:
            self.startImport(path, None)

    def startImport(self, path: str, cardPath: str | None, force: bool = False) -> None:
        """Import through the Logic (worker); the new model is selected when it is in the catalog."""
        if not self.host.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the import."), waitCursor=True):
            self.logic.importModel(path, cardPath, force=force, waitForCompletion=False,
                                   onDone=lambda data, error: self.onImported(path, cardPath, data, error))
            self.importing = True
            self.host.setStatus(_("Importing {name} (reading the weights as data and loading them strictly)"
                                   "...").format(name=Path(path).name))
            self.host.startPolling()
            self.host.onParameterNodeModified()

    def onImported(self, path: str, cardPath: str | None, data, error) -> None:
        self.importing = False
        self.host.onParameterNodeModified()
        if error is None:
            sample_data.registerSampleData()  # a card may bring a public sample volume
            self.host.selectModel(data["id"])
            self.host.setStatus(_("Imported model {model}.").format(model=data["id"]))
            self.host.onRefreshModels()
            return
        message = str(error)
        # the importer refuses to overwrite a model imported earlier unless asked to (--force in the CLI)
        if "already imported" in message and slicer.util.confirmYesNoDisplay(
                _("A model with this id was imported before. Replace it?"), windowTitle=_("Import model")):
            self.startImport(path, cardPath, force=True)
            return
        self.host.setStatus(_("Import failed: {message}").format(message=message))
        slicer.util.errorDisplay(_("Import of {name} failed: {message}").format(name=Path(path).name,
                                                                                 message=message))

