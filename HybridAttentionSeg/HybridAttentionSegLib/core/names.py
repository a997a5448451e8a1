"""Name lookup with "did you mean" hints."""

import difflib
from collections.abc import Iterable

from .errors import UnknownNameError


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` valid names closest to ``name``."""
    return difflib.get_close_matches(name, list(valid), n=n, cutoff=0.4)


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> UnknownNameError:
    """Build an :class:`UnknownNameError` listing the closest valid names."""
    valid = sorted(valid)
    hints = closest(name, valid)
    hint = f"did you mean {', '.join(repr(h) for h in hints)}?" if hints else f"valid: {', '.join(valid)}"
    message = f"unknown {kind} {name!r}; {hint}"
    return UnknownNameError(message)
