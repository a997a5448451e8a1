"""Checks of ``HybridAttentionSegLogic.process`` options, done before the worker starts (MRML-free, no Qt).

Every option the Logic itself uses after inference (the display settings) or passes on (methods, class,
device) is checked here, so that a typo fails at once with one line, not after minutes of inference with the
scene half-updated. Model ids, method support and class names are checked by the worker against the card
before it loads weights or runs anything.
"""

from __future__ import annotations

import math
import re

from ..core.errors import UserInputError

#: attention display settings ``process(display=...)`` accepts
DISPLAY_KEYS = ("opacity", "threshold", "colorMap", "showLegend")
#: perceptual colour maps offered for attention maps (Slicer ships these tables; matplotlib outside it)
COLOR_MAPS = ("Inferno", "Viridis", "Magma", "Plasma", "Cividis")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def checkDisplay(display: dict | None) -> dict:
    """The attention display settings, checked; returns a copy (unknown keys and bad values raise).

    Raises:
        UserInputError: an unknown key, an opacity/threshold outside [0, 1], an unknown colour map or a
            non-boolean ``showLegend``.
    """
    if display is None:
        return {}
    if not isinstance(display, dict):
        message = f"display must be a dict of {', '.join(DISPLAY_KEYS)}; got {type(display).__name__}"
        raise UserInputError(message)
    unknown = sorted(set(display) - set(DISPLAY_KEYS))
    if unknown:
        message = f"unknown display option(s) {', '.join(map(repr, unknown))}; use {', '.join(DISPLAY_KEYS)}"
        raise UserInputError(message)
    for key in ("opacity", "threshold"):
        if key in display:
            value = display[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0.0 <= float(value) <= 1.0:
                message = f"display {key} {value!r} is out of range; use a number from 0 to 1"
                raise UserInputError(message)
    if "colorMap" in display and display["colorMap"] not in COLOR_MAPS:
        message = f"unknown colour map {display['colorMap']!r}; use one of {', '.join(COLOR_MAPS)}"
        raise UserInputError(message)
    if "showLegend" in display and not isinstance(display["showLegend"], bool):
        message = f"display showLegend must be True or False; got {display['showLegend']!r}"
        raise UserInputError(message)
    return dict(display)


def checkProcessOptions(attentionMethods, targetClass, device, keepProbabilities, timeout,
                        allowUnfaithful=False) -> list[str] | None:
    """The other ``process`` options; returns the attention methods as a list (or None: the natural method).

    Raises:
        UserInputError: one line naming the bad option and what is allowed.
    """
    if attentionMethods is not None:
        if isinstance(attentionMethods, str) or not all(isinstance(m, str) and m for m in attentionMethods):
            message = (f"attentionMethods must be a list of method names (e.g. ['gates']); "
                       f"got {attentionMethods!r}")
            raise UserInputError(message)
        attentionMethods = list(attentionMethods)
    if targetClass is not None and not isinstance(targetClass, str):
        message = f"targetClass must be a segment name or None; got {targetClass!r}"
        raise UserInputError(message)
    if not isinstance(device, str) or not _DEVICE.match(device):
        message = f"unknown device {device!r}; use auto, cpu or cuda[:N]"
        raise UserInputError(message)
    for name, value in (("keepProbabilities", keepProbabilities), ("allowUnfaithful", allowUnfaithful)):
        if not isinstance(value, bool):
            message = f"{name} must be True or False; got {value!r}"
            raise UserInputError(message)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        message = f"timeout {timeout!r} is not a positive number of seconds; give one, or None to wait"
        raise UserInputError(message)
    return attentionMethods
