"""``hybridseg import-model PATH [--card CARD.json] [--id ID]``: add your own model to the user catalog.

PATH is a safetensors file or a PyTorch state dict (both need ``--card``), or a MONAI bundle folder / zip /
tar (``--card`` optional, overriding what the bundle says). Files that can carry code (TorchScript,
torch.package, .pt2, pickles with code) and unsafe archives are refused. See Resources/docs/model-cards.md.
"""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-model",
        help="import your own weights or a MONAI bundle into the user catalog",
        description="Import safetensors / PyTorch state-dict weights (with --card) or a MONAI bundle "
        "(folder, "
        "zip or tar) as a catalog model. Weights are loaded strictly into the network the card "
        "describes and stored as safetensors in the cache.",
    )
    parser.add_argument("path", metavar="PATH", help="weights file or MONAI bundle folder/zip/tar")
    parser.add_argument(
        "--card",
        metavar="CARD.json",
        help="model card (same schema as `hybridseg models --json`); required for bare weights",
    )
    parser.add_argument(
        "--id", dest="model_id", metavar="ID", help="model id (default: from the card/bundle)"
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier import with the same id")
    parser.add_argument("--json", action="store_true", help="print the imported card as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..core.weights.importer import import_model

    card = import_model(args.path, card_path=args.card, model_id=args.model_id, force=args.force)
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
    else:
        print(f"imported {card.id} ({card.architecture}, {len(card.labels)} labels) -> {card.path}")
    return 0
