"""One batch worker: the model loaded once, cases segmented one at a time through ``segment``'s code path.

A plain class (no ``ray`` import): :mod:`.runner` makes it a Ray actor with two threads, one running
:meth:`CaseWorker.segment` and one free for :meth:`CaseWorker.cancel`, which the running case polls before each
window batch. A cancelled case leaves nothing behind (its :class:`~..outputs.OutputSet` removes the staging
folder). A case's own problem (unreadable file, not an image, outputs in the way, out of memory...) is
returned as ``failed`` with one line of reason, never raised, so one bad case cannot stop the batch.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from ..errors import CancelledError, HybridSegError
from ..inference.case import CaseOptions, prepare_case, segment_case

logger = logging.getLogger(__name__)


@dataclass
class BatchJob:
    """What every case of a batch shares."""

    model_id: str
    out_dir: str
    options: CaseOptions
    catalog: list[str] = field(default_factory=list)
    device: str = "auto"


class CaseWorker:
    """Holds one :class:`~..inference.engine.Segmenter` (on its GPU, or on ``threads`` CPU threads).

    Construction never raises: a model that cannot be loaded is reported by :meth:`ready`.
    """

    def __init__(self, job: BatchJob, threads: int | None = None):
        self.job = job
        self.threads = threads
        self.init_error: str | None = None
        self._cancel = threading.Event()
        self.card = self.segmenter = None
        try:
            self._set_threads()
            from ..inference.engine import Segmenter
            from ..models.cards import get_card

            self.card = get_card(job.model_id, job.catalog)
            self.segmenter = Segmenter(self.card, device=job.device, download=True)
        except Exception as err:  # noqa: BLE001  (reported to the driver by ready(), which stops the batch)
            logger.debug("worker could not load the model", exc_info=True)
            self.init_error = _one_line(err)

    def _set_threads(self) -> None:
        if self.threads:  # per call too: the actor's threads are not the thread that built the model
            import torch

            torch.set_num_threads(int(self.threads))

    def ready(self) -> dict:
        """Where this worker runs and what it holds; ``error`` when the model did not load."""
        device = str(self.segmenter.device) if self.segmenter is not None else None
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": device, "threads": self.threads,
                "error": self.init_error}

    def cancel(self) -> None:
        """Ask the running case (and any later one) to stop."""
        self._cancel.set()

    def segment(self, stem: str, input_path: str) -> dict:
        """Segment one case into the job's folder; returns ``{"status", "seconds", "reason", "segments"}``."""
        start = time.perf_counter()
        if self.init_error or self._cancel.is_set():
            return {"status": "cancelled" if self._cancel.is_set() else "failed", "seconds": 0.0,
                    "reason": self.init_error or "", "segments": []}
        self._set_threads()
        try:
            outputs, volume = prepare_case(self.card, input_path, self.job.out_dir, self.job.options, stem=stem)
            summary, notices = segment_case(self.segmenter, outputs, volume, self.job.options,
                                            should_cancel=self._cancel.is_set)
        except CancelledError:
            return {"status": "cancelled", "seconds": time.perf_counter() - start, "reason": "", "segments": []}
        except Exception as err:  # noqa: BLE001  (a case's failure is reported in summary.csv, the batch goes on)
            if not isinstance(err, HybridSegError):
                logger.warning("case %s failed", stem, exc_info=True)
            return {"status": "failed", "seconds": time.perf_counter() - start, "reason": _one_line(err),
                    "segments": []}
        return {"status": "done", "seconds": time.perf_counter() - start, "reason": "; ".join(notices),
                "segments": summary["segments"]}


def _one_line(err: BaseException) -> str:
    """The error's message on one line (the class name too when it is not one of ours)."""
    text = " ".join(str(err).split())
    return text if isinstance(err, HybridSegError) and text else f"{type(err).__name__}: {text}"
