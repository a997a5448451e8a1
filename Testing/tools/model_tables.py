"""Write the bundled demo models' tables in the README and the docs from their model cards (and run outputs).

The numbers in those tables are generated, never typed: each table sits between two markers,
``<!-- generated: NAME -->`` and ``<!-- /generated: NAME -->``, and this script rewrites what lies between them.

* From the cards alone (``hybridseg train``, ``hybridseg validate --write-card`` and ``hybridseg explain-eval
  --write-card`` wrote them): ``validation`` and ``explain-eval`` (README.md), ``bundled`` and ``commands``
  (each card's training command; demo-data.md).
  ``Testing/pytest/test_model_tables.py`` fails when these are not what the cards say.
* With run outputs as well: ``demo`` (README.md) needs ``--demo-summary DIR/demo-summary.json`` from
  ``./run demo --out DIR``; ``results`` (validation.md) needs ``--validation DIR`` holding ``ID.json`` from
  ``hybridseg validate --model ID --json`` (the worst subject, the inference path and the time are not in the
  card). Without them those tables are left as they are.

Usage (repository root, main environment)::

    python Testing/tools/model_tables.py [--demo-summary FILE] [--validation DIR] [--check]

``--check`` writes nothing and exits 1 when a card-only table differs from what the cards say.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "HybridAttentionSeg"))

from HybridAttentionSegLib.core.data import mni  # noqa: E402
from HybridAttentionSegLib.core.models.cards import MODELS_DIR, load_card_file  # noqa: E402
from HybridAttentionSegLib.core.models.registry import get_architecture  # noqa: E402

logger = logging.getLogger("model_tables")
#: the demo task's classes, in the order validate reports them (GM / WM)
CLASSES = tuple(label["name"] for label in mni.TISSUE_LABELS)
#: a CNN baseline first, then the hybrids, in every table
ORDER = ("segresnet", "attention_unet", "transunet", "cnn_self_attention")
#: how the README names each architecture family
FAMILY_TEXT = {"cnn": "CNN baseline", "attention-gates": "attention gates", "vit-hybrid": "ViT bottleneck",
               "swin-hybrid": "Swin transformer", "cnn+self-attention": "CNN + self-attention"}
README, VALIDATION_MD, DEMO_DATA_MD = (ROOT / "README.md", ROOT / "Resources/docs/validation.md",
                                       ROOT / "Resources/docs/demo-data.md")
#: table name -> file it lives in
WHERE = {"demo": README, "validation": README, "explain-eval": README, "results": VALIDATION_MD,
         "bundled": DEMO_DATA_MD, "commands": DEMO_DATA_MD}


def demo_cards() -> list:
    """The bundled ``mni-tissue-*`` cards, CNN baseline first."""
    cards = [card for path in sorted(MODELS_DIR.glob("mni-tissue-*.json")) for card in load_card_file(path)]
    return sorted(cards, key=lambda c: (ORDER.index(c.architecture) if c.architecture in ORDER else len(ORDER), c.id))


def _metric(card, name: str, label: str) -> dict:
    found = [m for m in card.data.get("metrics", []) if m["name"] == name and m["label"] == label]
    if not found:
        message = f"card {card.id} has no {name} metric for {label}; run hybridseg validate --write-card"
        raise SystemExit(message)
    return found[0]


def _with_ci(card, name: str) -> str:
    def one(label):
        m = _metric(card, name, label)
        return f"{m['value']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"
    return " / ".join(one(label) for label in CLASSES)


def _plain(card, name: str) -> str:
    return " / ".join(f"{_metric(card, name, label)['value']:.3f}" for label in CLASSES)


def _agreement(card) -> str:
    def pct(kind):
        value = 100 * _metric(card, "background_agreement", kind)["value"]
        return "100 %" if value == 100 else f"{value:.2f} %"
    return f"{pct('near-zero')} / {pct('noise')}"


def _millions(card) -> str:
    return f"{card.data['training']['parameters'] / 1e6:.2f} M"


def _minutes(card) -> str:
    return f"{card.data['training']['wall_time_s'] / 60:.1f} min"


def _family(card) -> str:
    return get_architecture(card.architecture).family


def _recipe(card) -> str:
    return "mixed" if "mix" in card.data["training"].get("data", {}) else "template"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def validation_table(cards) -> list[str]:
    lines = ["| model | family | recipe | params | steps | train time (1 thread) | held-out synthetic (n = 20) "
             "| held-out slab | background agreement near-zero / noise |", "|---|---|---|---|---|---|---|---|---|"]
    for card in cards:
        lines.append(_row([f"`{card.id}`", FAMILY_TEXT[_family(card)], _recipe(card), _millions(card),
                           str(card.data["training"]["steps"]), _minutes(card), _with_ci(card, "dice_synthetic"),
                           _with_ci(card, "dice"), _agreement(card)]))
    return lines


def _kwargs_text(card) -> str:
    parts = []
    for key, value in card.data["architecture"].get("kwargs", {}).items():
        shown = "-".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"{key} {shown}")
    return ", ".join(parts)


def bundled_table(cards) -> list[str]:
    lines = ["| model | architecture (family) | parameters | steps | wall time | slab GM / WM "
             "| perturbed slab GM / WM |", "|---|---|---|---|---|---|---|"]
    for card in cards:
        size = card.data["weights"]["size_bytes"] / 1e6
        lines.append(_row([f"`{card.id}`",
                           f"`{card.architecture}` {_kwargs_text(card)} ({FAMILY_TEXT[_family(card)]}), "
                           f"{_recipe(card)} recipe", f"{_millions(card)} ({size:.1f} MB)",
                           str(card.data["training"]["steps"]), _minutes(card), _plain(card, "dice"),
                           _plain(card, "dice_perturbed")]))
    return lines


def training_commands(cards) -> list[str]:
    """Each card's own training command (as ``hybridseg train`` recorded it), in a bash block."""
    return ["```bash", *(card.data["training"]["command"] for card in cards), "```"]


def _auc(metrics, name: str) -> str:
    cells = []
    for baseline in ("blur", "mean"):
        m = next(m for m in metrics if m["metric"] == name and m.get("baseline") == baseline)
        cells.append(f"{m['value']:.3f} ({m['random_mean']:.3f} ± {m['random_sd']:.3f})")
    return " · ".join(cells)


def _value(metrics, name: str) -> str:
    found = [m["value"] for m in metrics if m["metric"] == name]
    return f"{found[0]:.2f}" if found else "–"


def _shipped(card, method: str, label: str | None) -> bool:
    for entry in card.data["explanations"]["offer"]["shipped"]:
        classes = entry.get("classes")
        if entry["method"] == method and (not classes or label in classes):
            return True
    return False


def explain_table(cards) -> list[str]:
    lines = ["| model | method | scored on | deletion AUC blur · mean (random) | insertion AUC blur · mean (random) "
             "| randomised ρ | data-randomised ρ | verdict | shipped |", "|---|---|---|---|---|---|---|---|---|"]
    for card in cards:
        for entry in card.data["explanations"]["methods"]:
            metrics = entry["metrics"]
            shipped = _shipped(card, entry["method"], entry.get("class"))
            lines.append(_row([f"`{card.id}`", f"`{entry['method']}`", entry["scored_on"],
                               _auc(metrics, "deletion_auc"), _auc(metrics, "insertion_auc"),
                               _value(metrics, "randomised_spearman"), _value(metrics, "data_randomised_spearman"),
                               "✅ faithful" if entry["faithful"] else "⚠️ not faithful",
                               "shipped" if shipped else "**withheld**"]))
    return lines


def demo_table(cards, summary: dict) -> list[str]:
    lines = ["| model | architecture | held-out slab Dice grey / white | maps shown | segmentation + maps |",
             "|---|---|---|---|---|"]
    runs = {run["model"]: run for run in summary["models"]}
    for card in cards:
        run = runs[card.id]
        lines.append(_row([f"`{card.id}`", f"`{card.architecture}` ({_millions(card)} params)",
                           _plain(card, "dice"), ", ".join(run["methods"]), f"{run['seconds']:.1f} s"]))
    return lines


def results_table(cards, folder: Path, current: str = "") -> list[str]:
    """validation.md's table; a model without ``ID.json`` in ``folder`` keeps its row from ``current``."""
    kept = {line.split("`")[1]: line for line in current.splitlines() if line.startswith("| `")}
    lines = ["| model | held-out synthetic (n = 20) | worst subject | template 2 mm* | template 1 mm* | held-out slab "
             "| background agreement | path, time |", "|---|---|---|---|---|---|---|---|"]
    for card in cards:
        if not (folder / f"{card.id}.json").is_file() and card.id in kept:
            logger.info("%s: no %s.json in %s; its row is kept", card.id, card.id, folder)
            lines.append(kept[card.id])
            continue
        result = json.loads((folder / f"{card.id}.json").read_text(encoding="utf-8"))
        if isinstance(result, list):
            result = next(r for r in result if r["model"] == card.id)
        worst = " / ".join(f"{result['synthetic'][label]['min']:.3f}" for label in CLASSES)
        agreement = " / ".join(f"{100 * result['background']['worst_agreement'][k]:.2f} %"
                               for k in ("near-zero", "noise"))
        lines.append(_row([f"`{card.id}` ({_recipe(card)} recipe, {card.data['training']['steps']} steps)",
                           _with_ci(card, "dice_synthetic"), worst, _with_ci(card, "dice_template_2mm"),
                           _with_ci(card, "dice_template_1mm"), _with_ci(card, "dice"), agreement,
                           f"{result['inference_path']}, {result['time_s'] / 60:.1f} min"]))
    return lines


def replace_block(text: str, name: str, lines: list[str]) -> str:
    """``text`` with the lines between the ``name`` markers replaced by ``lines``."""
    pattern = re.compile(rf"(<!-- generated: {re.escape(name)} -->\n).*?(<!-- /generated: {re.escape(name)} -->)",
                         re.DOTALL)
    if not pattern.search(text):
        message = f"no '<!-- generated: {name} -->' ... '<!-- /generated: {name} -->' markers"
        raise SystemExit(message)
    return pattern.sub(lambda m: m.group(1) + "\n".join(lines) + "\n" + m.group(2), text, count=1)


def tables(demo_summary: Path | None = None, validation: Path | None = None) -> dict[str, list[str]]:
    """Every table that the given inputs allow, by name."""
    cards = demo_cards()
    out = {"validation": validation_table(cards), "explain-eval": explain_table(cards),
           "bundled": bundled_table(cards), "commands": training_commands(cards)}
    if demo_summary is not None:
        out["demo"] = demo_table(cards, json.loads(demo_summary.read_text(encoding="utf-8")))
    if validation is not None:
        out["results"] = results_table(cards, validation, VALIDATION_MD.read_text(encoding="utf-8"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-summary", type=Path, help="demo-summary.json of `./run demo --out DIR`")
    parser.add_argument("--validation", type=Path, help="folder of ID.json from `hybridseg validate --json`")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a table is out of date (the card-only ones, plus those the "
                             "given run outputs allow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    texts = {path: path.read_text(encoding="utf-8") for path in set(WHERE.values())}
    stale = []  # (path, table name)
    for name, lines in tables(args.demo_summary, args.validation).items():
        path = WHERE[name]
        new = replace_block(texts[path], name, lines)
        if new != texts[path]:
            stale.append((path, name))
        texts[path] = new
    described = ", ".join(f"{path.relative_to(ROOT)}: {name}" for path, name in stale)
    if args.check:
        if stale:
            logger.info("out of date: %s", described)
        return 1 if stale else 0
    for path in {path for path, _ in stale}:  # only the files that changed
        path.write_text(texts[path], encoding="utf-8")
    logger.info("rewrote %s", described or "nothing (up to date)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
