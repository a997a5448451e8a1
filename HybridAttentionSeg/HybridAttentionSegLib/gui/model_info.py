"""Presenting the worker's catalog and devices: model-card HTML, device choices, attention choices.

Pure Python on the JSON the worker returns from ``info`` (card ``to_json()`` plus ``natural_method``; devices
with name and memory), so the Slicer process never imports torch to list models or GPUs.
"""

from __future__ import annotations

import html

from ..core.models import offers as offerRules
from ..worker.client import cardByIdFrom  # noqa: F401 (re-export for the Widget)

#: combobox value meaning "the model's natural attention method" / "the largest predicted structure"
NATURAL = ""
LARGEST = ""


def modelChoices(environment: dict | None) -> list[tuple[str, str]]:
    """``(label, model id)`` for a model combobox, bundled models first, then by title."""
    cards = sorted((environment or {}).get("catalog", []),
                   key=lambda c: (not c.get("bundled", False), c.get("title", c["id"]).lower()))
    return [(f"{card.get('title', card['id'])} ({card['id']})", card["id"]) for card in cards]


def deviceChoices(environment: dict | None) -> list[tuple[str, str]]:
    """``(label, device)`` pairs: every GPU with its name and memory, then the CPU; "CPU only" without GPU."""
    gpus = [d for d in (environment or {}).get("devices", []) if str(d.get("id", "")).startswith("cuda")]
    if not gpus:
        return [("CPU only", "cpu")]

    def label(device: dict) -> str:
        memory = f", {device['memory_gb']:g} GiB" if device.get("memory_gb") else ""
        return f"GPU {device['id'].split(':')[-1]}: {device.get('name', 'CUDA device')}{memory}"

    return ([(f"Auto ({label(gpus[0])})", "auto")] + [(label(d), d["id"]) for d in gpus]
            + [("CPU", "cpu")])


#: colours of the measured verdicts (the warning colour marks maps that failed the faithfulness test)
FAITHFUL_COLOUR, WARNING_COLOUR = "#2e7d32", "#e65100"


def methodQuality(card: dict | None, method: str) -> tuple[bool | None, str]:
    """(faithful, short text) from the card's generated ``explanations`` block; (None, "") when not scored.

    A class-dependent method counts as faithful only if it passed for every class it was evaluated on. Scores
    computed for other weights (``weights_sha256`` differs) are reported as stale, not as a verdict.
    """
    block = (card or {}).get("explanations") or {}
    items = [item for item in block.get("methods", []) if item.get("method") == method]
    if not items:
        return None, ""
    if block.get("weights_sha256") != (card.get("weights") or {}).get("sha256"):
        return False, "scores are for other weights (stale)"
    failed = [item for item in items if not item.get("faithful")]
    margins = ", ".join(
        f"{item['class'] + ': ' if item.get('class') else ''}deletion {item['margin']['deletion']:+.3f}, "
        f"insertion {item['margin']['insertion']:+.3f} vs random" for item in items)
    if failed:
        which = ", ".join(item["class"] for item in failed if item.get("class"))
        return False, f"not faithful on validation{' (' + which + ')' if which else ''}; {margins}"
    return True, f"faithful on validation; {margins}"


def attentionChoices(card: dict | None) -> list[tuple[str, str]]:
    """``(label, method)`` pairs of the maps the card offers (withheld ones are left out; see
    ``core/models/offers.py``); the natural method first and marked; the classes a class map is shipped for,
    "not evaluated" and stale scores in the label."""
    if not card:
        return []
    offered = offerRules.offers(card)
    methods = offerRules.offered_methods(card)
    natural = card.get("natural_method") if card.get("natural_method") in methods else offerRules.natural_method(card)
    choices = []
    for m in ([natural] if natural else []) + [m for m in methods if m != natural]:
        label = f"{m} (natural)" if m == natural else m
        offer = offered[m]
        if offer.classes is not None:
            label += f" (shipped for {', '.join(offer.classes)})"
        elif offer.status == offerRules.NOT_EVALUATED:
            label += " (not evaluated)"
        elif offer.status == offerRules.STALE:
            label += " \u26a0 scores are for other weights (stale)"
        choices.append((label, m))
    return choices


def explanationsHtml(card: dict) -> str:
    """Each method's measured verdict next to its name, failures in the warning colour ("" if not scored)."""
    block = card.get("explanations") or {}
    if not block:
        return ""
    e = html.escape
    rows = []
    offered = offerRules.offers(card)
    for method in list(dict.fromkeys(item["method"] for item in block.get("methods", []))):
        faithful, text = methodQuality(card, method)
        colour = FAITHFUL_COLOUR if faithful else WARNING_COLOUR
        mark = "&#10003;" if faithful else "&#9888;"
        offer = offered.get(method)
        shipped = ("withheld (not offered)" if offer is not None and offer.status == offerRules.WITHHELD else
                   f"shipped for {', '.join(offer.classes)} only" if offer is not None and offer.classes is not None
                   and offer.withheld else "")
        shipped = f" <b>{e(shipped)}</b>" if shipped else ""
        rows.append(f"<li><b>{e(method)}</b>:{shipped} <span style='color:{colour}'>{mark} {e(text)}</span></li>")
    protocol = block.get("protocol", {})
    return (f"<p><b>Can I trust the maps?</b> (measured by <code>{e(block.get('generated_by', ''))}</code>, "
            f"protocol {e(str(protocol.get('name', '?')))} v{e(str(protocol.get('version', '?')))})</p>"
            f"<ul>{''.join(rows)}</ul>")


def classChoices(card: dict | None, method: str = "") -> list[tuple[str, str]]:
    """``(label, class name)`` pairs; the first one means "largest predicted structure".

    For a class map the card ships for some classes only (``method``; "" = the natural method), only those.
    """
    if not card:
        return []
    names = [label["name"] for label in card.get("labels", [])]
    allowed = offerRules.allowed_classes(card, method or card.get("natural_method") or "")
    if allowed is not None:
        return [("Largest shipped structure", LARGEST)] + [(name, name) for name in names if name in allowed]
    return [("Largest structure", LARGEST)] + [(name, name) for name in names]


def modelCardHtml(card: dict | None) -> str:
    """A short, escaped HTML model card: what it segments, how, from what data, its limits and licence."""
    if not card:
        return "<p><i>No model selected.</i></p>"
    e = html.escape
    architecture = card.get("architecture", {}).get("name", "?")
    parts = [f"<h3>{e(card.get('title', card['id']))}</h3>",
             f"<p><b>Id:</b> {e(card['id'])} &nbsp; <b>Version:</b> {e(str(card.get('version', '-')))}<br>"
             f"<b>Architecture:</b> {e(architecture)} &nbsp; <b>Attention:</b> "
             f"{e(', '.join(m for _, m in attentionChoices(card)) or 'none')}</p>"]
    parts.append(explanationsHtml(card))
    if card.get("description"):
        parts.append(f"<p>{e(card['description'])}</p>")
    modalities = ", ".join(card.get("input", {}).get("modalities", [])) or "any"
    spacing = card.get("preprocessing", {}).get("spacing")
    spacingText = " x ".join(f"{s:g}" for s in spacing) + " mm" if spacing else "native"
    parts.append(f"<p><b>Input:</b> {e(modalities)} ({card.get('input', {}).get('channels', 1)} channel(s)), "
                 f"resampled to {e(spacingText)}</p>")
    labels = "".join(
        f"<li><span style='color:rgb({','.join(str(int(255 * c)) for c in label['color'])})'>&#9632;</span> "
        f"{e(label['name'])} ({label['value']})</li>" for label in card.get("labels", []))
    parts.append(f"<p><b>Segments:</b></p><ul>{labels}</ul>")
    metrics = card.get("metrics") or []
    if metrics:
        rows = "".join(f"<li>{e(m['name'])}{' (' + e(m['label']) + ')' if m.get('label') else ''}: "
                       f"{m['value']:.3g} <i>({e(m['source'])})</i></li>" for m in metrics)
        parts.append(f"<p><b>Validation:</b></p><ul>{rows}</ul>")
    parts.append(f"<p><b>Intended use:</b> {e(card.get('intended_use', '-'))}<br>"
                 f"<b>License:</b> {e(card.get('license', '-'))}<br>"
                 f"<b>Weights:</b> {e(weightsStatus(card))}</p>")
    parts.append(resourcesHtml(card))
    return "".join(parts)


def downloadSizeText(card: dict) -> str:
    """Size of the weights download: ``weights.size_bytes`` or ``resources.download_mb`` ("231 MB"), else
    "about N MB" from ``resources.weights_mb``; "" when the card does not say. MB = 10^6 bytes."""
    resources, weights = card.get("resources") or {}, card.get("weights") or {}
    if weights.get("size_bytes"):
        return f"{weights['size_bytes'] / 1e6:,.0f} MB"
    if resources.get("download_mb"):
        return f"{float(resources['download_mb']):,.0f} MB"
    if resources.get("weights_mb"):
        return f"about {float(resources['weights_mb']):,.0f} MB"
    return ""


def weightsStatus(card: dict) -> str:
    """Bundled, downloaded or not (with the download size), for the model card."""
    if card.get("bundled"):
        return "bundled with the extension"
    if card.get("downloaded"):
        return "downloaded (in the cache)"
    size = downloadSizeText(card)
    return f"not downloaded yet ({size + ', ' if size else ''}hash-checked download)"


def resourcesHtml(card: dict) -> str:
    """Size, measured speed and memory from the card's ``resources`` block (escaped HTML; "" if none)."""
    resources = card.get("resources") or {}
    if not resources and not downloadSizeText(card):
        return ""
    e = html.escape
    size = []
    if resources.get("parameters"):
        size.append(f"{resources['parameters'] / 1e6:.1f} M parameters")
    if resources.get("weights_mb"):
        size.append(f"weights {resources['weights_mb']:g} MB")
    if downloadSizeText(card) and not card.get("bundled"):
        size.append(f"download {downloadSizeText(card)}")
    rows = [f"<b>Size:</b> {e(', '.join(size))}"] if size else []
    roi = "x".join(str(n) for n in card.get("inference", {}).get("roi_size", [])) or "one"
    for key, measured in sorted(resources.items()):
        if not key.endswith("_measured") or not isinstance(measured, dict):
            continue
        device = key[: -len("_measured")].upper()
        if measured.get("forward_seconds_one_window") is not None:
            rows.append(f"<b>Speed ({e(device)}, measured):</b> "
                        f"{measured['forward_seconds_one_window']:g} s per {e(roi)} window")
        peaks = [f"{value:,.0f} MB peak" for name, value in measured.items()
                 if name.startswith("peak_") and isinstance(value, (int, float))]
        if peaks:
            rows.append(f"<b>Memory ({e(device)}, measured):</b> {e(', '.join(peaks))} for one window")
        if measured.get("conditions"):
            rows.append(f"<small><i>{e(str(measured['conditions']))}</i></small>")
    recommended = [f"{label} {resources[key]:g} GB" for key, label in
                   (("gpu_memory_gb_recommended", "GPU"), ("cpu_ram_gb_recommended", "RAM"))
                   if resources.get(key)]
    if recommended:
        rows.append(f"<b>Memory (recommended):</b> {e(', '.join(recommended))}")
    if resources.get("basis"):
        rows.append(f"<small><i>{e(str(resources['basis']))}</i></small>")
    return f"<p><b>Resources</b><br>{'<br>'.join(rows)}</p>" if rows else ""
