"""A progress bar on stderr for long CLI runs (tqdm), adapted to the core's ``(done, total)`` callbacks."""

from __future__ import annotations

import sys


class ProgressBar:
    """Callable ``(done, total)`` that drives a tqdm bar on stderr; ``close()`` (or ``with``) when finished.

    Args:
        description: bar label.
        enabled: False draws nothing.
        unit: ``"win"`` for sliding windows, ``"B"`` for bytes (scaled to KiB/MiB).
    """

    def __init__(self, description: str, enabled: bool = True, unit: str = "win"):
        self.description = description
        self.enabled = enabled and sys.stderr is not None
        self.unit = unit
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            scaled = self.unit == "B"
            self._bar = tqdm(total=total or None, desc=self.description, unit=self.unit, unit_scale=scaled,
                             unit_divisor=1024 if scaled else 1000, file=sys.stderr, leave=False,
                             dynamic_ncols=True)
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)  # tqdm throttles redraws (mininterval)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
