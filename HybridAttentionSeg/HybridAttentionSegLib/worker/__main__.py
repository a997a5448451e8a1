"""``python -m HybridAttentionSegLib.worker``: run the JSON-lines worker (:mod:`.server`)."""

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
