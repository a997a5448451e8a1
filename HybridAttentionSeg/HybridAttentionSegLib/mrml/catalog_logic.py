"""The model-catalog side of the Logic: download a model's weights, import a model, through the worker.

:class:`ModelCatalogLogic` is a mixin of :class:`~.logic.HybridAttentionSegLogic` (it uses the Logic's
:meth:`~.logic.HybridAttentionSegLogic.request`, :attr:`~.logic.HybridAttentionSegLogic.isRunning` and
:attr:`~.logic.HybridAttentionSegLogic.environment`). Nothing here touches MRML, Qt or torch: the worker
process downloads (:func:`~.core.weights.resolve_weights_file`, hash-checked) and imports
(:func:`~.core.importer.import_model`, weights read as data, loaded strictly). No dialogs: errors are raised
or reported through ``onEvent``::

    logic.downloadModel("unetr-btcv", onEvent=lambda event, info: print(event, info.get("percent")))
    logic.importModel("/data/my_unetr.safetensors", cardPath="/data/my_unetr.json")   # -> {"id", "card"}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..core.errors import CancelledError, UserInputError
from .events import ProcessEvent

logger = logging.getLogger(__name__)

#: seconds a blocking download may take (the largest catalog download is about 250 MB)
DOWNLOAD_TIMEOUT_S = 3600.0
#: seconds a blocking import may take (builds the network and loads the weights strictly)
IMPORT_TIMEOUT_S = 900.0


class ModelCatalogLogic:
    """``downloadModel`` / ``importModel`` for :class:`~.logic.HybridAttentionSegLogic` (see module doc)."""

    def downloadModel(self, modelId: str, onEvent: Callable | None = None, *, force: bool = False,
                      waitForCompletion: bool = True, timeout: float = DOWNLOAD_TIMEOUT_S):
        """Bring ``modelId``'s weights into the cache, hash-checked (an existing copy is re-checked).

        :param onEvent: ``onEvent(ProcessEvent, info)``: STARTED, PROGRESS (``stage`` "download", ``done`` and
            ``total`` in bytes, ``percent``), then FINISHED (``result``: the worker's answer), FAILED
            (``error``, ``message``) or CANCELLED (:meth:`cancel` kills the worker; a partial download never
            gets the final file name).
        :param force: download again even if a verified copy is cached.
        :param waitForCompletion: block and return ``{"model", "path", "size_bytes", "already_downloaded",
            "bundled"}``, raising the worker's error (``ChecksumError``, ``DownloadError``...); otherwise
            return the request id at once and let the caller :meth:`poll`.
        """

        if not modelId:
            raise UserInputError("no model selected; choose a model from the catalog to download")
        self._checkNotRunning("download a model")
        emit = _emitter(onEvent)

        def done(data, error):
            if error is None:
                card = self.card(modelId)
                if card is not None:
                    card["downloaded"] = True
                emit(ProcessEvent.FINISHED, {"model": modelId, "result": data})
            elif isinstance(error, CancelledError):
                emit(ProcessEvent.CANCELLED, {"model": modelId})
            else:
                emit(ProcessEvent.FAILED, {"model": modelId, "error": error, "message": str(error)})

        emit(ProcessEvent.STARTED, {"model": modelId})
        return self.request("download", {"model": modelId, "force": bool(force)}, onDone=done,
                            onProgress=lambda info: emit(ProcessEvent.PROGRESS, info),
                            waitForCompletion=waitForCompletion, timeout=timeout)

    def importModel(self, path, cardPath=None, modelId: str | None = None, *, force: bool = False,
                    onDone: Callable | None = None, waitForCompletion: bool = True,
                    timeout: float = IMPORT_TIMEOUT_S):
        """Import weights (safetensors / state dict, with ``cardPath``) or a MONAI bundle (folder, zip, tar)
        into the user catalog; the model is listed by every later :meth:`fetchEnvironment`.

        :param modelId: catalog id to give it (default: the card's id, else derived from the file name).
        :param force: replace a model imported earlier under the same id.
        :param onDone: ``onDone(data, error)`` when the worker has answered.
        :returns: blocking: ``{"id", "card"}`` (the card as listed by the catalog); otherwise the request id.
        :raises UserInputError: (blocking) unsafe or unfitting weights, a missing card, a taken id...
        """
        if not path:
            message = "no model file selected; choose a weights file or a MONAI bundle to import"
            raise UserInputError(message)
        self._checkNotRunning("import a model")

        def finished(data, error):
            if error is None and self.environment is not None:
                catalog = [c for c in self.environment.get("catalog", []) if c.get("id") != data["id"]]
                self.environment["catalog"] = [*catalog, data["card"]]
            if error is not None and not isinstance(error, CancelledError):
                logger.info("import of %s failed: %s", path, error)
            if onDone is not None:
                onDone(data, error)

        fields = {"path": str(Path(path)), "card": str(Path(cardPath)) if cardPath else None,
                  "model_id": modelId or None, "force": bool(force)}
        return self.request("import_model", fields, onDone=finished, waitForCompletion=waitForCompletion,
                            timeout=timeout)

    def _checkNotRunning(self, what: str) -> None:
        if self.isRunning:
            message = f"a segmentation is running; {what} when it has finished (or cancel it)"
            raise RuntimeError(message)


def _emitter(onEvent: Callable | None) -> Callable:
    """``emit(event, info)`` that calls ``onEvent`` and logs (never raises) an observer's exception."""
    def emit(event, info):
        if onEvent is None:
            return
        try:
            onEvent(event, info)
        except Exception:  # noqa: BLE001 - an observer's bug must not break the request's bookkeeping
            logger.exception("onEvent callback failed for %s", getattr(event, "value", event))

    return emit
