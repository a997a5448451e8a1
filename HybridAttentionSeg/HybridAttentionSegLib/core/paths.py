"""Where cards, weights and the cache live. Standard library only, so Slicer's process can use it without torch."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: an installed wheel: setup.py copies the bundled models into the package (they are no package data in git)
WHEEL_MODELS_DIR = _PACKAGE_DIR / "_resources" / "Models"
#: the source tree or a Slicer install: the module's own resource folder, beside the package
SOURCE_MODELS_DIR = _PACKAGE_DIR.parent / "Resources" / "Models"
#: bundled cards, weights, card schema and sample volumes
MODELS_DIR = WHEEL_MODELS_DIR if WHEEL_MODELS_DIR.is_dir() else SOURCE_MODELS_DIR
SCHEMA_PATH = MODELS_DIR / "model-card.schema.json"


def cache_dir() -> Path:
    """Cache folder: ``HYBRIDSEG_CACHE``, else ``$XDG_CACHE_HOME/hybridseg`` or ``~/.cache/hybridseg``."""
    env = os.environ.get("HYBRIDSEG_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "hybridseg"


def user_catalog_dir() -> Path:
    """Where imported models' cards live."""
    return cache_dir() / "catalog"


def catalog_files(extra: list[str] | None = None) -> list[Path]:
    """Built-in cards, then the user catalog, then ``HYBRIDSEG_CATALOG`` (``os.pathsep``-separated), then ``extra``."""
    files = sorted(p for p in MODELS_DIR.glob("*.json") if p.name != SCHEMA_PATH.name)
    user_dir = user_catalog_dir()
    if user_dir.is_dir():
        files += sorted(user_dir.glob("*.json"))
    files += [Path(p) for p in os.environ.get("HYBRIDSEG_CATALOG", "").split(os.pathsep) if p]
    return files + [Path(p) for p in (extra or [])]
