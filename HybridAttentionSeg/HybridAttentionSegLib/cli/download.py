"""``hybridseg download ID [ID ...]``: fetch model weights into the cache, hash-verified.

The file is streamed to a temporary name and renamed into ``$HYBRIDSEG_CACHE/weights/<id>/`` only after its
hash matches the card (a mismatch deletes it and prints expected vs actual). Already cached files are
re-verified. ``hybridseg segment`` downloads on first use the same way.
"""

from __future__ import annotations

from .progress import ProgressBar


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download model weights into the cache (hash-verified)",
        description="Download the weights of catalog models into the cache (HYBRIDSEG_CACHE, default "
        "~/.cache/hybridseg), verifying the hash the model card declares.",
    )
    parser.add_argument("model", nargs="*", metavar="ID", help="model id(s) from `hybridseg models`")
    parser.add_argument("--all", action="store_true", help="every catalog model that has a download URL")
    parser.add_argument("--force", action="store_true", help="download again even if a cached copy exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import UserInputError
    from ..core.models.cards import get_card, load_catalog
    from ..core.weights import resolve_weights_file

    if args.all:
        cards = [
            c for c in load_catalog(args.catalog).values() if c.weights.get("url") or c.weights.get("urls")
        ]
    elif args.model:
        cards = [get_card(model_id, args.catalog) for model_id in args.model]
    else:
        raise UserInputError("name the model(s) to download (see `hybridseg models`) or pass --all")
    for card in cards:
        bar = ProgressBar(card.id, enabled=not args.no_progress, unit="B")
        try:
            path = resolve_weights_file(card, download=True, progress=bar, verify=True, force=args.force)
        finally:
            bar.close()
        print(f"{card.id}\t{path}")
    return 0
