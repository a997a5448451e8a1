"""The inference worker: ``python -m HybridAttentionSegLib.worker`` speaking JSON lines on stdin/stdout.

It runs in its own process (``PythonSlicer`` inside Slicer, the venv's ``python`` outside), so inference never
blocks Slicer's GUI thread and a crash here cannot take the MRML scene down. It imports the core engine only
(torch, MONAI, numpy): never ``slicer``, ``vtk``, ``qt`` or ``ctk``. Models stay resident between requests,
so a re-run costs only inference.

Requests, one JSON object per line on stdin (``id`` is echoed in every reply)::

    {"id": "r1", "cmd": "ping"}
    {"id": "r2", "cmd": "info", "catalog": [extra card files] | null}
    {"id": "r3", "cmd": "segment", "model": ID, "input": PATH, "out_dir": DIR, "stem": "result",
     "attention": [methods] | null (the model's natural method), "target_class": NAME | null,
     "device": "auto" | "cpu" | "cuda[:N]", "probabilities": true, "tta": false, "catalog": [...] | null}
    {"id": "r4", "cmd": "sample", "model": ID, "out_dir": DIR}     (the card's sample volume: DIR/sample.nrrd)
    {"id": "r5", "cmd": "download", "model": ID, "force": false, "catalog": [...] | null}
         (the weights into the cache, hash-checked; progress in bytes)
    {"id": "r6", "cmd": "import_model", "path": PATH, "card": CARD_PATH | null, "model_id": ID | null,
     "force": false}                                               (into the user catalog; core.importer)
    {"id": "r7", "cmd": "shutdown"}

Replies, one JSON object per line on stdout::

    {"type": "ready", "pid": ..., "protocol": 1}                          once, at start
    {"type": "progress", "id", "stage": "download" | "inference", "done", "total", "percent"}
    {"type": "log", "id", "level": "INFO", "message": "..."}
    {"type": "result", "id", "data": {...}}                               segment: the results.json summary
                                                      download: {model, path, size_bytes, already_downloaded}
                                                      import_model: {id, card (as listed by info)}
    {"type": "error", "id", "kind": "UserInputError", "message": "...", "user_error": true, "traceback": null}

The protocol stream is a private duplicate of the original stdout; file descriptor 1 itself is pointed at
stderr, so stray prints from libraries (Python or C) can never corrupt the protocol. End of stdin (the parent
died or closed the pipe) ends the worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict

from ..core.errors import UserInputError

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: models kept resident at once (least recently used is dropped first)
MAX_RESIDENT_MODELS = 2
#: at most one progress line per this many seconds unless the percentage changed
PROGRESS_INTERVAL_S = 0.5
GUI_MODULES = ("slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt")


class ProtocolError(UserInputError):
    """A request the worker cannot understand."""


class Channel:
    """Writes one JSON object per line to the protocol stream; safe to call from several threads."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()

    def send(self, messageType: str, /, **fields) -> None:
        line = json.dumps({"type": messageType, **fields}, default=_jsonDefault)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _jsonDefault(value):
    """numpy scalars/arrays and paths in summaries."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class _ChannelLogHandler(logging.Handler):
    """Forwards log records to the client as ``log`` lines, tagged with the request being served."""

    def __init__(self, worker: Worker):
        super().__init__(logging.INFO)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.worker.channel.send("log", id=self.worker.currentId, level=record.levelname,
                                     message=self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise (a closed pipe: the client is gone)
            self.handleError(record)


class Worker:
    """Serves requests one at a time; keeps ``Segmenter`` instances resident per (model, device, weights)."""

    def __init__(self, channel: Channel, threads: int | None = None):
        self.channel = channel
        self.threads = threads
        self.currentId: str | None = None
        self.segmenters: OrderedDict[tuple, object] = OrderedDict()

    def serve(self, stdin) -> int:
        """Answer requests until ``shutdown`` or end of input; returns the exit code."""
        self.channel.send("ready", pid=os.getpid(), protocol=PROTOCOL_VERSION,
                          python=sys.version.split()[0])
        for line in stdin:
            line = line.strip()
            if not line:
                continue
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                self.channel.send("error", id=None, kind="ProtocolError", user_error=False, traceback=None,
                                  message=f"cannot parse request ({err}); send one JSON object per line")
                continue
            if request.get("cmd") == "shutdown":
                self.channel.send("result", id=request.get("id"), data={"shutdown": True})
                return 0
            self.handle(request)
        return 0

    def handle(self, request: dict) -> None:
        """Run one request and answer it with a ``result`` or an ``error`` line."""
        self.currentId = request.get("id")
        handlers = {"ping": self.ping, "info": self.info, "segment": self.segment, "sample": self.sample,
                    "download": self.download, "import_model": self.importModel}
        try:
            handler = handlers.get(request.get("cmd"))
            if handler is None:
                message = (f"unknown command {request.get('cmd')!r}; "
                           f"use one of {', '.join(handlers)} or shutdown")
                raise ProtocolError(message)
            self.channel.send("result", id=self.currentId, data=handler(request))
        except Exception as err:  # noqa: BLE001 - every failure goes back to the client; the worker lives on
            userError = isinstance(err, UserInputError)
            self.channel.send("error", id=self.currentId, kind=type(err).__name__,
                              message=str(err) or type(err).__name__, user_error=userError,
                              traceback=None if userError else traceback.format_exc())
        finally:
            self.currentId = None

    # ------------------------------------------------------------------------------------ commands
    def ping(self, request: dict) -> dict:
        """Liveness check; also reports any GUI/VTK module that was imported (there must be none)."""
        loaded = sorted({name.split(".")[0] for name in sys.modules} & set(GUI_MODULES))
        return {"pong": True, "pid": os.getpid(), "gui_modules": loaded,
                "resident": [key[0] for key in self.segmenters]}

    def info(self, request: dict) -> dict:
        """The model catalog (cards plus derived fields), compute devices and package versions."""
        from ..core.inference.results import versions
        from ..core.models.cards import load_catalog

        cards = [_listing(card) for card in load_catalog(request.get("catalog")).values()]
        return {"catalog": cards, "devices": computeDevices(), "versions": versions(), "pid": os.getpid()}

    def segment(self, request: dict) -> dict:
        """Segment one volume file and write the result files; returns the results summary."""
        from ..core.inference.io import read_volume
        from ..core.inference.results import write_result
        from ..core.models.cards import get_card
        from ..core.models.offers import check_request, default_classes, natural_method
        from ..core.models.registry import check_method

        for key in ("model", "input", "out_dir"):
            if not request.get(key):
                message = f"segment request without {key!r}; send model, input and out_dir"
                raise ProtocolError(message)
        card = get_card(request["model"], request.get("catalog"))
        methods = request.get("attention")
        methods = ([m for m in [natural_method(card)] if m] if methods is None else list(methods))
        for method in methods:
            check_method(card.spec, method)
        targetClass = request.get("target_class") or None
        targetName = card.label_name(card.label_index(targetClass)) if targetClass is not None else None
        # maps the card withholds (failed the faithfulness test) only on explicit request; still labelled
        allowUnfaithful = bool(request.get("allow_unfaithful", False))
        check_request(card, methods, targetName, allowUnfaithful, opt_in="allowUnfaithful=True")
        choices = None if allowUnfaithful or targetName else default_classes(card, methods)
        device = request.get("device") or "auto"
        segmenter, reused = self._segmenter(card, device)
        volume = read_volume(request["input"])
        keepProbabilities = bool(request.get("probabilities", True))
        logger.info("segmenting a %s volume with %s on %s", "x".join(map(str, volume.shape)), card.id,
                    segmenter.device)
        result = segmenter.run(volume, attention=methods, target_class=targetClass,
                               tta=bool(request.get("tta", False)), keep_probabilities=keepProbabilities,
                               on_progress=self._progress("inference"), target_choices=choices)
        for notice in result.notices:
            logger.warning(notice)
        summary = write_result(result, request["out_dir"], request.get("stem") or "result",
                               probabilities=keepProbabilities, overwrite=bool(request.get("overwrite")))
        summary.update(labels=card.labels, title=card.title, natural_method=natural_method(card),
                       target_class_value=result.target_class, reused_model=reused, worker_pid=os.getpid())
        return summary

    def sample(self, request: dict) -> dict:
        """Write the model's sample volume (card ``sample_data``) to ``out_dir/sample.nrrd``.

        The card is data: ``sample_data.file`` (relative to the card) is copied as is, and only the loaders in
        :data:`SAMPLE_LOADERS` are ever called; a card cannot make the worker import arbitrary code.
        """
        from ..core.inference.io import read_volume, write_scalar_nrrd
        from ..core.models.cards import get_card

        if not request.get("out_dir"):
            raise ProtocolError("sample request without 'out_dir'; send model and out_dir")
        card = get_card(request.get("model") or "", request.get("catalog"))
        sampleData = card.data.get("sample_data") or {}
        if sampleData.get("file"):
            path = sampleData["file"] if card.path is None else card.path.parent / sampleData["file"]
            volume = read_volume(path)
        elif sampleData.get("loader") in SAMPLE_LOADERS:
            volume = SAMPLE_LOADERS[sampleData["loader"]](sampleData)
        else:
            message = (f"model {card.id!r} names no sample data this worker can load "
                       f"(sample_data: {sampleData or 'none'}); load your own volume instead")
            raise UserInputError(message)
        out = os.path.join(request["out_dir"], "sample.nrrd")
        write_scalar_nrrd(out, volume.data[0] if volume.channels == 1 else volume.data, volume.affine)
        return {"path": out, "name": sampleData.get("name") or volume.name}

    def download(self, request: dict) -> dict:
        """Bring a model's weights into the cache (``progress`` lines in bytes, stage ``download``).

        :func:`~.core.weights.resolve_weights_file` does the work: a fresh download is hash-checked before it
        gets its final name; an existing file (bundled or cached) is re-checked here (``verify=True``), so the
        answer always means "present and intact". ``force`` downloads again.
        """
        from ..core.models.cards import get_card
        from ..core.weights import resolve_weights_file

        card = get_card(request.get("model") or "", request.get("catalog"))
        force = bool(request.get("force", False))
        present = card.downloaded and not force
        path = resolve_weights_file(card, download=True, progress=self._progress("download"), verify=True,
                                    force=force)
        return {"model": card.id, "path": str(path), "size_bytes": path.stat().st_size,
                "already_downloaded": present, "bundled": card.bundled}

    def importModel(self, request: dict) -> dict:
        """Import weights / a MONAI bundle into the user catalog (:func:`~.core.importer.import_model`)."""
        from ..core.weights.importer import import_model

        if not request.get("path"):
            raise ProtocolError("import_model request without 'path'; send the weights file or bundle path")
        card = import_model(request["path"], request.get("card") or None, request.get("model_id") or None,
                            force=bool(request.get("force", False)))
        for key in [key for key in self.segmenters if key[0] == card.id]:  # a replaced model is not reused
            del self.segmenters[key]
        return {"id": card.id, "card": _listing(card)}

    # ------------------------------------------------------------------------------------ helpers
    def _segmenter(self, card, device: str):
        """A resident ``Segmenter`` for ``card`` on ``device`` (built and loaded on first use)."""
        from ..core.inference.engine import Segmenter

        key = (card.id, device, card.weights.get("sha256"), str(card.path))
        if key in self.segmenters:
            self.segmenters.move_to_end(key)
            return self.segmenters[key], True
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        while len(self.segmenters) >= MAX_RESIDENT_MODELS:
            self.segmenters.popitem(last=False)
        segmenter = Segmenter(card, device=device, download_progress=self._progress("download"))
        self.segmenters[key] = segmenter
        return segmenter, False

    def _progress(self, stage: str):
        """A ``(done, total)`` callback that sends throttled ``progress`` lines for the current request."""
        last = {"percent": -1, "time": 0.0}
        requestId = self.currentId

        def report(done: int, total: int) -> None:
            percent = int(100 * done / total) if total else 0
            now = time.monotonic()
            if percent == last["percent"] and now - last["time"] < PROGRESS_INTERVAL_S and done != total:
                return
            last.update(percent=percent, time=now)
            self.channel.send("progress", id=requestId, stage=stage, done=int(done), total=int(total),
                              percent=percent)

        return report


def _listing(card) -> dict:
    """A card as ``info`` lists it: the card's JSON form plus its natural method (the first one it ships)."""
    from ..core.models.offers import natural_method

    entry = card.to_json()
    entry["natural_method"] = natural_method(card)
    return entry


def _mniTemplate(sampleData: dict):
    from ..core.data.mni import load_template

    return load_template(int(sampleData.get("resolution_mm", 2)))


#: the only sample-data loaders a card may name (by string); never resolved by import
SAMPLE_LOADERS = {"core.data.mni.load_template": _mniTemplate}


def computeDevices() -> list[dict]:
    """CPU plus every CUDA device with its name and memory (GiB)."""
    import torch

    devices = [{"id": "cpu", "name": "CPU", "memory_gb": None}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            devices.append({"id": f"cuda:{index}", "name": properties.name,
                            "memory_gb": round(properties.total_memory / 2**30, 1)})
    return devices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m HybridAttentionSegLib.worker",
        description="HybridAttentionSeg inference worker (JSON lines on stdin/stdout)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    # the protocol gets its own copy of stdout; fd 1 then points at stderr, so stray output cannot corrupt it
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    worker = Worker(Channel(protocol), threads=args.threads)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = _ChannelLogHandler(worker)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False)
    return worker.serve(stdin)


if __name__ == "__main__":
    sys.exit(main())
