"""``hybridseg`` console script.

One module per subcommand; each exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` (called with the parsed args, returns an exit code). Heavy imports (torch, slicer) happen inside
``func``, so ``hybridseg --help`` stays fast.

Exit codes: 0 success; 2 bad input or usage (one clear line on stderr: what is wrong and how to fix it);
130 interrupted (Ctrl-C), 128 + N ended by signal N (SIGTERM: 143); 1 anything else. Interrupted and
terminated runs leave no partial outputs (see :mod:`..core.outputs`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import signal
import sys
import threading

#: subcommand modules, in --help order
COMMAND_MODULES = (
    "architectures", "models", "segment", "segment_batch", "bench", "train", "demo", "download", "import_model",
    "refine", "eval_clicks", "review", "explain_eval", "validate", "experiment",
)

logger = logging.getLogger("hybridseg")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
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






class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``hybridseg: error: ...; see --help``), still exit code 2."""

    def error(self, message: str):
        self.exit(2, f"hybridseg: error: {self.prog}: {message}; see `{self.prog} --help`\n")


#: options whose value may start with '-' (RAS coordinates): ``--click -10,4,30,Liver`` works without ``=``
NEGATIVE_VALUE_OPTIONS = ("--click",)
_NEGATIVE = re.compile(r"^-[0-9.]")


def join_negative_values(argv: list[str]) -> list[str]:
    """Write ``--click -10,...`` as ``--click=-10,...`` (argparse would take ``-10,...`` for an option)."""
    out: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            out += [token, *tokens]
            break
        if token in NEGATIVE_VALUE_OPTIONS:
            value = next(tokens, None)
            if value is not None and _NEGATIVE.match(value):
                out.append(f"{token}={value}")
                continue
            out += [token] if value is None else [token, value]
            continue
        out.append(token)
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP as an exception, so that ``finally`` blocks remove partial outputs (like Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate_on_signals() -> dict:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` (main thread only); return the previous handlers."""
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous

    def raise_terminated(signum, _frame):
        raise Terminated(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signum = getattr(signal, name)
            previous[signum] = signal.signal(signum, raise_terminated)
    return previous


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from ..core.errors import CancelledError, UserInputError

    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    previous = _terminate_on_signals()
    try:
        return int(args.func(args) or 0)
    except UserInputError as err:
        print(f"hybridseg: error: {err}", file=sys.stderr)
        return 2
    except CancelledError:
        print("hybridseg: cancelled", file=sys.stderr)
        return 1
    except Terminated as err:
        print(f"hybridseg: terminated by signal {err.signum}; no partial outputs were left", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("hybridseg: interrupted; no partial outputs were left", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (the edge: report, with traceback under --verbose)
        logger.debug("unexpected error", exc_info=True)
        print(f"hybridseg: internal error: {type(err).__name__}: {err} (re-run with -v for details)",
              file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


if __name__ == "__main__":
    sys.exit(main())
