"""Real-browser tests of ``hybridseg review``, run with the review environment's Python (``.venv-review``).

``Testing/pytest/test_review_app.py`` runs this folder; it reuses the phantom writers of ``Testing/pytest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT / "Testing" / "pytest", ROOT / "HybridAttentionSeg"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
