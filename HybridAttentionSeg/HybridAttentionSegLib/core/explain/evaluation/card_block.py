"""The model card's ``explanations`` block: written by ``hybridseg explain-eval --write-card``, never by hand.

The block ties every score to what produced it: the weights (their SHA-256, copied from the card's
``weights.sha256`` at evaluation time), the protocol (name, version, settings), the software versions, the
data and the date. It also stores the **quick-mode** scores of the same run, which the test suite recomputes.

A card's block is **stale** (:func:`staleness`) when

1. it is missing while the card's weights are bundled, or
2. its ``weights_sha256`` differs from the card's ``weights.sha256`` (the model was retrained or replaced), or
3. its protocol version differs from :data:`~.protocol.PROTOCOL_VERSION` (the evaluation changed meaning), or
4. its methods differ from the architecture's explanation methods (a method was added or removed), or
5. a recomputed quick-mode score (deletion AUC, insertion AUC per method and class) differs from the stored
   one by more than :data:`~.protocol.QUICK_TOLERANCE`.

Regenerate with ``hybridseg explain-eval --model ID --write-card`` (or ``--all-bundled``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ...models.offers import WITHHELD, offer_from_verdicts, offers
from .protocol import PROTOCOL_VERSION, QUICK_TOLERANCE

REGENERATE = "hybridseg explain-eval --model {id} --write-card"


def _key(item: dict) -> str:
    return item["method"] + (f"|{item['class']}" if item.get("class") else "")


def quick_scores(report: dict) -> list[dict]:
    """The scores of a quick-mode report that the staleness check compares (mean over baselines)."""
    out = []
    for item in report["methods"]:
        out.append({
            "method": item["method"], "class": item["class"],
            "deletion_auc": round(sum(v["auc"] for v in item["deletion"].values()) / len(item["deletion"]), 4),
            "insertion_auc": round(sum(v["auc"] for v in item["insertion"].values()) / len(item["insertion"]), 4),
            "randomised_spearman": item["randomisation"]["full"],
        })
    return out


def _metrics(item: dict) -> list[dict]:
    metrics = []
    for kind in ("deletion", "insertion"):
        for baseline, v in item[kind].items():
            metrics.append({"metric": f"{kind}_auc", "baseline": baseline, "value": v["auc"],
                            "random_mean": v["random_mean"], "random_sd": v["random_sd"]})
    metrics.append({"metric": "randomised_spearman", "value": item["randomisation"]["full"]})
    data = item["randomisation"].get("data_randomisation") or {}
    if "spearman" in data:  # reported next to the verdict, not part of it (data_randomisation.py)
        metrics.append({"metric": "data_randomised_spearman", "value": data["spearman"], "steps": data["steps"]})
    loc = item["localisation"]
    metrics.append({"metric": "energy_in_target", "value": loc["energy_in_target"],
                    "uniform": loc["energy_in_target_uniform"]})
    metrics.append({"metric": "pointing_game", "value": loc["pointing_game"], "chance": loc["pointing_game_chance"]})
    return metrics


def build_block(full: dict, quick: dict) -> dict:
    """The card block from a full-protocol report and a quick-mode report of the same weights."""
    if full["weights_sha256"] != quick["weights_sha256"]:
        raise ValueError("the full and quick reports were computed on different weights")
    methods = [{"method": item["method"], "class": item["class"], "scored_on": item["scored_on"],
                "faithful": item["faithful"], "verdict": item["verdict"], "reasons": item["reasons"],
                "margin": item["margin"], "metrics": _metrics(item)} for item in full["methods"]]
    return {
        "generated_by": REGENERATE.format(id=full["model"]),
        "weights_sha256": full["weights_sha256"],
        "protocol": full["protocol"],
        "software": full["software"],
        "data": full["data"],
        "date": full["date"],
        "device": full["device"],
        "methods": methods,
        "data_randomisation": full.get("data_randomisation", {"run": False}),
        # what the card ships: derived from the verdicts above, never typed (core/models/offers.py)
        "offer": offer_from_verdicts(methods),
        "quick": {"protocol": quick["protocol"], "data": quick["data"], "tolerance": QUICK_TOLERANCE,
                  "scores": quick_scores(quick)},
    }


def write_block(card_path, block: dict) -> Path:
    """Replace the ``explanations`` block of the card file at ``card_path`` (a single-card JSON file)."""
    path = Path(card_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        message = f"{path} holds a list of cards; --write-card needs a file with one card"
        raise ValueError(message)
    data["explanations"] = block
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def staleness(card, quick: dict | None = None, methods: list[str] | None = None) -> list[str]:
    """Reasons the card's block is stale (empty list: up to date). ``quick``: a recomputed quick report."""
    block = card.data.get("explanations")
    regenerate = f"; regenerate with `{REGENERATE.format(id=card.id)}`"
    if not block:
        return [f"{card.id}: no explanations block{regenerate}"] if card.bundled else []
    reasons = []
    if block.get("weights_sha256") != card.weights.get("sha256"):
        reasons.append(f"{card.id}: scores were computed for weights {str(block.get('weights_sha256'))[:12]}…, "
                       f"the card's weights are {str(card.weights.get('sha256'))[:12]}…{regenerate}")
    if block.get("protocol", {}).get("version") != PROTOCOL_VERSION:
        reasons.append(f"{card.id}: protocol version {block.get('protocol', {}).get('version')} != "
                       f"{PROTOCOL_VERSION}{regenerate}")
    if block.get("offer") != offer_from_verdicts(block.get("methods", [])):
        reasons.append(f"{card.id}: the block's offer (shipped/withheld maps) does not follow from its verdicts"
                       f"{regenerate}")
    if methods is not None and sorted({m["method"] for m in block["methods"]}) != sorted(methods):
        reasons.append(f"{card.id}: block evaluates {sorted({m['method'] for m in block['methods']})}, the "
                       f"architecture offers {sorted(methods)}{regenerate}")
    if quick is not None:
        stored = {_key(s): s for s in block["quick"]["scores"]}
        tolerance = float(block["quick"].get("tolerance", QUICK_TOLERANCE))
        for score in quick_scores(quick):
            old = stored.get(_key(score))
            if old is None:
                reasons.append(f"{card.id}: no stored quick score for {_key(score)}{regenerate}")
                continue
            for metric in ("deletion_auc", "insertion_auc"):
                if abs(score[metric] - old[metric]) > tolerance:
                    reasons.append(f"{card.id}: {_key(score)} quick {metric} {score[metric]:.4f} vs stored "
                                   f"{old[metric]:.4f} (tolerance {tolerance}){regenerate}")
    return reasons


def method_verdicts(card) -> dict[str, dict]:
    """{method: {"faithful", "verdict", "classes": {class or "": {...}}}} from the card's block (may be empty).

    A class-dependent method is ``faithful`` only if it passed for every evaluated class.
    """
    block = card.data.get("explanations") or {}
    stale = block.get("weights_sha256") not in (None, card.weights.get("sha256"))
    out: dict[str, dict] = {}
    for item in block.get("methods", []):
        entry = out.setdefault(item["method"], {"faithful": True, "classes": {}, "stale": stale})
        scores = {m["metric"] + (f"_{m['baseline']}" if m.get("baseline") else ""): m["value"]
                  for m in item["metrics"]}
        entry["classes"][item["class"] or ""] = {"faithful": item["faithful"], "verdict": item["verdict"],
                                                 "margin": item["margin"], "scores": scores}
        entry["faithful"] = entry["faithful"] and item["faithful"]
    for entry in out.values():
        entry["verdict"] = ("scores are for other weights (stale)" if entry["stale"] else
                            "faithful on validation" if entry["faithful"] else "not faithful on validation")
    return out


def attention_quality(card, methods, target_name: str | None = None) -> dict[str, dict]:
    """What a result's JSON says about each of its maps: the card's verdict and scores for the class used.

    ``{"method": {"verdict", "faithful" (None: not scored), "offer", "class", "deletion_margin",
    "insertion_margin", "randomised_spearman", "protocol"}}``; ``offer``: ``shipped``, ``withheld`` (computed
    on explicit request only), ``not evaluated``, ``stale`` or ``not an explanation`` (core/models/offers.py).
    """
    from ...models.offers import withheld_reason
    from .protocol import NOT_EXPLANATIONS

    offered = offers(card)
    verdicts = method_verdicts(card)
    protocol = (card.data.get("explanations") or {}).get("protocol", {})
    out = {}
    for method in methods:
        if method in NOT_EXPLANATIONS:
            out[method] = {"verdict": "not an explanation (not scored)", "faithful": None,
                           "offer": "not an explanation"}
            continue
        entry = verdicts.get(method)
        if entry is None:
            out[method] = {"verdict": "not evaluated", "faithful": None, "offer": "not evaluated"}
            continue
        classes = entry["classes"]
        chosen = classes.get(target_name or "") or classes.get("") or next(iter(classes.values()))
        faithful = None if entry["stale"] else chosen["faithful"]
        out[method] = {
            "verdict": entry["verdict"] if entry["stale"] else chosen["verdict"], "faithful": faithful,
            "offer": (WITHHELD if withheld_reason(card, method, target_name)
                      else offered[method].status if method in offered else "not evaluated"),
            "class": target_name if target_name in classes else None,
            "deletion_margin": chosen["margin"]["deletion"], "insertion_margin": chosen["margin"]["insertion"],
            "randomised_spearman": chosen["scores"].get("randomised_spearman"),
            "protocol": f"{protocol.get('name', '?')} v{protocol.get('version', '?')}",
        }
    return out
