"""The one architecture registry. Declared once (``architectures.py``); tests, CLI and cards iterate it."""

from __future__ import annotations

import logging
import warnings

from ..names import unknown_name_error
from . import architectures
from .spec import ATTENTION_METHODS, ArchitectureSpec, Constraints  # noqa: F401 (public API of the registry)

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, ArchitectureSpec] = {}
_BUILTIN_DONE: list[bool] = []


def register_architecture(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Register ``spec`` under ``spec.name``; registering a name twice warns and replaces it."""
    _ensure_builtin()
    unknown = [m for m in spec.attention_methods if m not in ATTENTION_METHODS]
    if unknown:
        message = f"architecture {spec.name!r} declares unknown attention methods {unknown}"
        raise ValueError(message)
    if spec.name in _REGISTRY:
        warnings.warn(f"architecture {spec.name!r} registered twice; the later one wins", stacklevel=2)
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_builtin() -> None:
    """Register the built-in architectures once (before any lookup or user registration)."""
    if _BUILTIN_DONE:
        return
    _BUILTIN_DONE.append(True)
    for spec in architectures.BUILTIN_ARCHITECTURES:
        register_architecture(spec)


def get_architecture(name: str) -> ArchitectureSpec:
    """Look up an architecture; unknown names raise with the closest valid names."""
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name_error("architecture", name, _REGISTRY) from None


def list_architectures() -> list[ArchitectureSpec]:
    """All registered architectures, in registration order."""
    _ensure_builtin()
    return list(_REGISTRY.values())


def check_method(spec: ArchitectureSpec, method: str) -> None:
    """Raise if ``spec`` does not support attention ``method``, listing the ones it has."""
    from ..errors import UnsupportedMethodError

    if method not in spec.attention_methods:
        message = (
            f"architecture {spec.name!r} does not support attention method {method!r}; "
            f"it supports: {', '.join(spec.attention_methods)}"
        )
        raise UnsupportedMethodError(message)
