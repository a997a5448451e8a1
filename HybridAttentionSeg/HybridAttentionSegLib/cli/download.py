"""``hybridseg download ID [ID ...]``: fetch model weights into the cache, hash-verified.

The file is streamed to a temporary name and renamed into ``$HYBRIDSEG_CACHE/weights/<id>/`` only after its
hash matches the card (a mismatch deletes it and prints expected vs actual). Already cached files are
re-verified. ``hybridseg segment`` downloads on first use the same way.
"""

from __future__ import annotations

import sys


class ByteProgress:
    """``progress(done_bytes, total_bytes)`` drawing a tqdm bar in bytes on stderr."""

    def __init__(self, description: str, enabled: bool = True):
        self.description = description
        self.enabled = enabled and sys.stderr is not None
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total or None,
                desc=self.description,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)  # tqdm throttles redraws (mininterval)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


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
    from ..core.cards import get_card, load_catalog
    from ..core.errors import UserInputError
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
        bar = ByteProgress(card.id, enabled=not args.no_progress)
        try:
            path = resolve_weights_file(card, download=True, progress=bar, verify=True, force=args.force)
        finally:
            bar.close()
        print(f"{card.id}\t{path}")
    return 0
