"""Shared pytest fixtures.

``headless_app``: a fresh Qt-free Slicer (slicer-core) scene with the module logics registered, one per test.
``slicer.mrmlScene`` is a process-wide global that :class:`HeadlessSlicer` points at its own scene, so the
fixture is function-scoped: every test gets its own scene and the scene is cleared afterwards.
Other engineers may append fixtures below.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the project is not necessarily pip-installed: make ``HybridAttentionSegLib`` importable
if str(ROOT / "HybridAttentionSeg") not in sys.path:
    sys.path.insert(0, str(ROOT / "HybridAttentionSeg"))


@pytest.fixture
def headless_app():
    """A function-scoped :class:`HybridAttentionSegLib.headless.HeadlessSlicer` (skips without slicer-core)."""
    pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    from HybridAttentionSegLib.headless import HeadlessSlicer

    app = HeadlessSlicer()
    yield app
    app.scene.Clear(True)
