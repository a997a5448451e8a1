"""Measured faithfulness and sanity of attention/explanation maps (``hybridseg explain-eval``).

One job per file: :mod:`.protocol` (settings, thresholds), :mod:`.data` (what is evaluated),
:mod:`.perturbation` (deletion/insertion curves), :mod:`.localisation`, :mod:`.sanity` (cascading
randomisation), :mod:`.runner` (one run), :mod:`.report` (JSON, markdown, plots) and :mod:`.card_block`
(the model card's ``explanations`` block and its staleness check).
"""

from __future__ import annotations

import datetime
import time

import torch

from .data import heldout_case, input_case
from .protocol import FULL, PRESETS, QUICK, Protocol
from .runner import Evaluation, explanation_methods


def _device() -> str:
    from ...inference.fastpath import cpu_name

    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def evaluate_card(card, volume=None, methods=None, classes=None, protocol: Protocol = FULL, model=None,
                  sanity: bool = True) -> dict:
    """Evaluate ``methods`` (default: every explanation method of the card) and return the report dict.

    Args:
        card: the model card (weights loaded from it unless ``model`` is given).
        volume: a :class:`~...inference.volume.Volume` to evaluate on; default: the MNI152 held-out slab.
        methods: method names; default :func:`explanation_methods`.
        classes: label values for class-dependent maps; default every segment present in the region.
        protocol: :data:`FULL` or :data:`QUICK` (or a custom :class:`Protocol`).
        model: trained network already built (tests); else built and loaded from the card.
        sanity: run the randomisation cascade (off: AUCs only, for the staleness test).
    """
    from ...inference.results import versions

    t0 = time.perf_counter()
    methods = list(methods or explanation_methods(card))
    case = (input_case(volume, card) if volume is not None
            else heldout_case(card, single_window=protocol.single_window))
    result = Evaluation(card, case, protocol, model=model).run(methods, classes, sanity=sanity)
    return {
        "model": card.id,
        "architecture": card.architecture,
        "weights_sha256": card.weights.get("sha256"),
        "protocol": protocol.as_dict(),
        "software": versions(),
        "device": _device(),
        "date": datetime.date.today().isoformat(),
        "data": case.description,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        **result,
    }


__all__ = ["FULL", "PRESETS", "QUICK", "Evaluation", "Protocol", "evaluate_card", "explanation_methods"]
