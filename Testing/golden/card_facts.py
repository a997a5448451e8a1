#!/usr/bin/env python3
"""Write the checkpoint facts of the catalog cards from the golden manifests (never typed by hand).

    python3 Testing/golden/card_facts.py          # check: exit 1 and list differences
    python3 Testing/golden/card_facts.py --write  # update resources.* of the three catalog cards

``resources.parameters`` is the parameter count of the network *as the upstream MONAI release builds it*
(``data/manifest-CARD.json``), ``resources.checkpoint_keys`` / ``checkpoint_elements`` the number of entries
and of numbers (parameters + buffers) in its state dict. The test suite runs the check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE.parents[1] / "HybridAttentionSeg" / "Resources" / "Models"
CARDS = ("swin-unetr-btcv", "unetr-btcv", "swin-unetr-brats21")


def facts(card: str) -> dict:
    """The ``resources`` entries a card must carry, from its manifest."""
    manifest = json.loads((HERE / "data" / f"manifest-{card}.json").read_text())
    return {
        "parameters": manifest["parameters"],
        "checkpoint_keys": manifest["n_keys"],
        "checkpoint_elements": manifest["tensor_elements"],
        "parameters_source": (f"state dict of the network as MONAI {manifest['monai']} builds it (the release "
                              f"that wrote the checkpoint): Testing/golden/data/manifest-{card}.json"),
    }


def differences(card: str) -> dict:
    """{field: (card value, manifest value)} where the card disagrees with its manifest."""
    data = json.loads((MODELS / f"{card}.json").read_text())
    have = data.get("resources", {})
    return {k: (have.get(k), v) for k, v in facts(card).items() if have.get(k) != v}


def write(card: str) -> None:
    path = MODELS / f"{card}.json"
    data = json.loads(path.read_text())
    data.setdefault("resources", {}).update(facts(card))
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    if "--write" in argv:
        for card in CARDS:
            write(card)
        return 0
    bad = {card: differences(card) for card in CARDS}
    for card, diff in bad.items():
        for key, (have, want) in diff.items():
            sys.stderr.write(f"{card}: resources.{key} is {have!r}, manifest says {want!r}\n")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
