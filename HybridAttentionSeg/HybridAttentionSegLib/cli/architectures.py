"""``hybridseg architectures [--json]``: the architecture registry."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("architectures", help="list registered architectures")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..core.models.registry import list_architectures

    items = [spec.summary() for spec in list_architectures()]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for item in items:
        print(f"{item['name']:<20} {item['family']:<20} {', '.join(item['attention_methods'])}")
        print(f"{'':<20} {item['description']}")
    return 0
