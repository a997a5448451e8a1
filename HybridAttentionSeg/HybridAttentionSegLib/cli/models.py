"""``hybridseg models [--json]``: the model catalog."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the model catalog")
    parser.add_argument("--json", action="store_true", help="cards in the catalog schema")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..core.models.cards import load_catalog

    cards = list(load_catalog(args.catalog).values())
    if args.json:
        print(json.dumps([card.to_json() for card in cards], indent=2))
        return 0
    for card in cards:
        state = "bundled" if card.bundled else ("downloaded" if card.downloaded else "download")
        labels = ", ".join(label["name"] for label in card.labels)
        print(f"{card.id:<36} {card.architecture:<18} {state:<10} {labels}")
    return 0
