"""``hybridseg review [DIR | INPUT --model ID]``: review results in the browser (trame-slicer web app).

Checks that need no heavy imports come first (port, folder, environment), so bad input costs one line and exit
code 2 within a second. The app itself lives in :mod:`..web` and needs the review environment (``./run review``).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

NOISY_LOGGERS = ("trame_server", "trame_client", "trame_slicer", "trame_rca", "wslink", "aiohttp.access",
                 "aiohttp.server")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "review", help="review segmentations, attention maps and uncertainty in the browser",
        description="Serves a web app (trame-slicer: Slicer's own views) on a folder of `hybridseg segment` / "
                    "`demo` outputs, or on INPUT segmented on request with --model. Listens on 127.0.0.1 only "
                    "unless --host says otherwise. Needs the review environment: use `./run review ...`.")
    parser.add_argument("path", nargs="?", default=".", metavar="DIR | INPUT",
                        help="folder of outputs (default: the current folder), or with --model an input volume")
    parser.add_argument("--model", default=None, help="segment INPUT with this catalog model on request")
    parser.add_argument("--out", default="hybridseg-review", metavar="DIR",
                        help="with --model: folder the results go to and are served from (default ./hybridseg-review)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    parser.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Raise ``UserInputError`` if ``port`` on ``host`` cannot be listened on (taken, or not an address here)."""
    from ..core.errors import UserInputError

    if not 0 <= port <= 65535:
        message = f"--port {port} is out of range; use 1-65535 (or 0 for a free port)"
        raise UserInputError(message)
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                message = f"port {port} on {host} is already in use; pick another with --port (or stop that server)"
            else:
                message = f"cannot listen on {host}:{port} ({err.strerror}); check --host"
            raise UserInputError(message) from err


def run(args) -> int:
    from ..core.errors import UserInputError

    if not is_loopback(args.host):
        print(f"hybridseg: warning: listening on {args.host}: anyone who can reach this machine can open these "
              "cases and save reviews (no login); use --host 127.0.0.1 unless you mean it", file=sys.stderr)
    check_port(args.host, args.port)
    path = Path(args.path)
    if args.model:
        if not path.exists():
            message = f"input not found: {path}; give a volume file or DICOM folder to segment"
            raise UserInputError(message)
        root = Path(args.out)
        root.mkdir(parents=True, exist_ok=True)
    else:
        if not path.is_dir():
            message = f"{path} is not a folder; give a folder of `hybridseg segment` outputs, or INPUT --model ID"
            raise UserInputError(message)
        root = path
    try:
        from ..web.app import ReviewApp
    except ImportError as err:
        message = (f"the review app needs its own environment ({err.name or err} is missing; trame-slicer needs "
                   "slicer-core 5.11): run `./run review ...` instead")
        raise UserInputError(message) from err
    if not args.verbose:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    app = ReviewApp(root, catalog=args.catalog, inputPath=str(path) if args.model else None, modelId=args.model)
    app.start(host=args.host, port=args.port, openBrowser=not args.no_browser)
    return 0
