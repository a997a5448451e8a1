"""Progress of a run that makes several sliding-window passes (segmentation, class maps, flip TTA)."""

from __future__ import annotations

from collections.abc import Callable

#: ``(windows_done, windows_total)``
ProgressFn = Callable[[int, int], None]


class PassProgress:
    """Turns per-pass window counts into one monotonic (done, total) stream across passes."""

    def __init__(self, callback: ProgressFn | None, passes: int):
        self.callback = callback
        self.passes = passes
        self.finished = 0
        self.current_total = 0
        self.index = -1

    def start_pass(self, total: int) -> None:
        if self.index >= 0:
            self.finished += self.current_total
        self.index += 1
        self.current_total = total

    def update(self, done: int) -> None:
        if self.callback is not None:
            estimate = self.finished + self.current_total * max(self.passes - self.index, 1)
            self.callback(self.finished + done, max(estimate, self.finished + done))
