"""Presenting the worker's catalog and devices: model-card HTML, device choices, attention choices.

Pure Python on the JSON the worker returns from ``info`` (card ``to_json()`` plus ``natural_method``; devices
with name and memory), so the Slicer process never imports torch to list models or GPUs.
"""

from __future__ import annotations

import html

#: combobox value meaning "the model's natural attention method" / "the largest predicted structure"
NATURAL = ""
LARGEST = ""


def cardByIdFrom(environment: dict | None, modelId: str) -> dict | None:
    """The card with ``modelId`` in an ``info`` answer, or None."""
    for card in (environment or {}).get("catalog", []):
        if card.get("id") == modelId:
            return card
    return None


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


def attentionChoices(card: dict | None) -> list[tuple[str, str]]:
    """``(label, method)`` pairs for a card; the natural method first and marked."""
    if not card:
        return []
    natural = card.get("natural_method")
    methods = list(card.get("attention_methods", []))
    ordered = ([natural] if natural in methods else []) + [m for m in methods if m != natural]
    return [(f"{m} (natural)" if m == natural else m, m) for m in ordered]


def classChoices(card: dict | None) -> list[tuple[str, str]]:
    """``(label, class name)`` pairs; the first one means "largest predicted structure"."""
    if not card:
        return []
    names = [label["name"] for label in card.get("labels", [])]
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
    weights = ("bundled" if card.get("bundled") else "downloaded" if card.get("downloaded")
               else "downloaded on first use (hash-checked)")
    parts.append(f"<p><b>Intended use:</b> {e(card.get('intended_use', '-'))}<br>"
                 f"<b>License:</b> {e(card.get('license', '-'))}<br><b>Weights:</b> {weights}</p>")
    return "".join(parts)
