"""Each attention map's measured faithfulness, as the review app shows it next to the method (no slicer, no web).

The scores come from ``segment``'s JSON (an ``explanations`` block written with the maps), else from the model
card's ``explanations`` block (``hybridseg explain-eval`` writes both). Either may be a mapping
``{method: entry}`` or a list of entries carrying a ``method`` key; an entry holds the scores (e.g. deletion /
insertion AUC and their random baselines) and a ``faithful`` flag. A method without an entry is shown as
"not measured": the app never invents a score.
"""

from __future__ import annotations

import json
import logging
import numbers
from pathlib import Path

from ..core.paths import catalog_files

logger = logging.getLogger(__name__)

NOT_MEASURED = "not measured"
#: keys of an entry shown as scores, in this order (others are ignored)
SCORE_KEYS = ("deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random",
              "randomisation_spearman", "randomization_spearman", "value")


def _entries(block) -> dict:
    if isinstance(block, dict):
        if "methods" in block and isinstance(block["methods"], (dict, list)):
            return _entries(block["methods"])
        return {str(k): v for k, v in block.items() if isinstance(v, dict)}
    if isinstance(block, list):
        return {str(e["method"]): e for e in block if isinstance(e, dict) and e.get("method")}
    return {}


def _card_block(model_id: str, catalog: list[str] | None):
    """The ``explanations`` block of card ``model_id``, read as plain JSON.

    Not through :mod:`..core.models.cards`: that module imports the networks (torch, MONAI), which would add
    seconds to the app's first render for a lookup in a JSON file.
    """
    if not model_id:
        return None
    found = None
    for path in catalog_files(catalog):
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("cannot read model card file %s: %s", path, err)
            continue
        for card in data if isinstance(data, list) else [data]:
            if isinstance(card, dict) and card.get("id") == model_id:
                found = card.get("explanations")  # later files win, as in the catalog
    return found


def faithfulness(summary: dict, methods, catalog: list[str] | None = None) -> dict:
    """``{method: {"status", "faithful", "scores", "source"}}`` for every method in ``methods``.

    ``status`` is ``"faithful"``, ``"not faithful on validation"``, ``"measured"`` (scores without a flag) or
    :data:`NOT_MEASURED`; ``scores`` is ``{name: value}`` of the numeric scores found.
    """
    sources = [("result", _entries(summary.get("explanations"))),
               ("model card", _entries(_card_block(str(summary.get("model") or ""), catalog)))]
    out = {}
    for method in methods:
        entry, source = None, ""
        for name, entries in sources:
            if method in entries:
                entry, source = entries[method], name
                break
        if entry is None:
            out[method] = {"status": NOT_MEASURED, "faithful": None, "scores": {}, "source": ""}
            continue
        scores = {key: float(entry[key]) for key in SCORE_KEYS
                  if isinstance(entry.get(key), numbers.Real) and not isinstance(entry.get(key), bool)}
        flag = entry.get("faithful")
        if isinstance(flag, bool):
            status = "faithful" if flag else "not faithful on validation"
        else:
            status = "measured" if scores else NOT_MEASURED
        out[method] = {"status": status, "faithful": flag if isinstance(flag, bool) else None,
                       "scores": scores, "source": source}
    return out


def label(entry: dict) -> str:
    """One line for the UI: the status and the scores (``deletion_auc 0.850 (random 0.947)``...)."""
    scores = entry.get("scores") or {}
    parts = []
    for key in ("deletion_auc", "insertion_auc"):
        if key in scores:
            random = scores.get(f"{key}_random")
            parts.append(f"{key.replace('_', ' ')} {scores[key]:.3f}"
                         + (f" (random {random:.3f})" if random is not None else ""))
    if not parts and "value" in scores:
        parts.append(f"score {scores['value']:.3f}")
    return entry["status"] + (": " + ", ".join(parts) if parts else "")
