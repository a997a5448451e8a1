"""``python -m HybridAttentionSegLib.cli`` == ``hybridseg``."""

import sys

from . import main

sys.exit(main())
