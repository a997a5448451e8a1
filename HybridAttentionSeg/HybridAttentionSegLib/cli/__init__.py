"""``hybridseg`` console script.

One module per subcommand; each exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` (called with the parsed args, returns an exit code). Heavy imports (torch, slicer) happen inside
``func``, so ``hybridseg --help`` stays fast.

Exit codes: 0 success; 2 bad input or usage (one clear line on stderr); 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: subcommand modules, in --help order
COMMAND_MODULES = (
    "architectures", "models", "segment", "bench", "train", "demo", "download", "import_model",
    "refine", "eval_clicks", "review", "explain_eval",
)

logger = logging.getLogger("hybridseg")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridseg",
        description="Hybrid CNN-transformer segmentation with attention maps on the input grid.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--catalog", action="append", default=[], metavar="FILE",
                        help="extra model catalog file (JSON card or list of cards); repeatable. "
                             "Also read from HYBRIDSEG_CATALOG (os.pathsep-separated)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser






def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from ..core.errors import CancelledError, UserInputError

    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on usage errors
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UserInputError as err:
        print(f"hybridseg: error: {err}", file=sys.stderr)
        return 2
    except CancelledError:
        print("hybridseg: cancelled", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hybridseg: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (the edge: report, with traceback under --verbose)
        logger.debug("unexpected error", exc_info=True)
        print(f"hybridseg: internal error: {type(err).__name__}: {err} (re-run with -v for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
