"""A progress bar on stderr for long CLI runs (tqdm), adapted to the engine's callback."""

from __future__ import annotations

import sys


class ProgressBar:
    """Callable ``(done, total)`` that drives a tqdm bar on stderr; close() when finished."""

    def __init__(self, description: str, enabled: bool = True):
        self.description = description
        self.enabled = enabled and sys.stderr is not None
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None or self._bar.total != total:
            from tqdm import tqdm

            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=self.description, unit="win", file=sys.stderr,
                             leave=False, dynamic_ncols=True)
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
