"""Explainer interface.

An explainer produces one non-negative map per sliding window; the engine stitches the maps with the same
Gaussian blending as the logits, maps them back onto the input grid and normalises them to [0, 1].

Life cycle inside the engine, for every window batch ``x`` (B, C, D, H, W)::

    with explainer:                       # attach(): register hooks (removed in __exit__)
        logits = model(x)                 # hooks capture what they need (reduced inside the hook)
        m = explainer.window_map(x, logits)   # (B, 1, D, H, W) float32, >= 0

Gradient explainers (``needs_grad``) may run their own forward/backward inside ``window_map``.
Class-dependent explainers (``needs_class``) read ``self.target_class`` (an int label index >= 1).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..models.registry import ArchitectureSpec


class Explainer:
    """Base class: subclasses set ``name`` and implement :meth:`window_map` (and hooks if needed)."""

    name: ClassVar[str] = ""
    needs_grad: ClassVar[bool] = False
    needs_class: ClassVar[bool] = False

    def __init__(self, model: nn.Module, spec: ArchitectureSpec, roi_size: tuple[int, int, int],
                 target_class: int | None = None):
        self.model = model
        self.spec = spec
        self.roi_size = tuple(roi_size)
        self.target_class = target_class
        self._handles: list = []

    # hooks ---------------------------------------------------------------------------------
    def attach(self) -> None:
        """Register forward hooks (default: none)."""

    def detach(self) -> None:
        """Remove every hook handle registered through :meth:`_hook`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, module: nn.Module, fn) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def __enter__(self):
        self.attach()
        return self

    def __exit__(self, *exc):
        self.detach()
        return False

    # maps ----------------------------------------------------------------------------------
    def window_map(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Return the (B, 1, D, H, W) float32 non-negative map for window batch ``x``."""
        raise NotImplementedError


def upsample_to(t: torch.Tensor, size) -> torch.Tensor:
    """Trilinear resize of a (B, C, d, h, w) tensor to spatial ``size``."""
    t = t.float()
    if tuple(t.shape[2:]) == tuple(size):
        return t
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="trilinear", align_corners=False)


def tokens_to_volume(values: torch.Tensor, grid, size) -> torch.Tensor:
    """(B, N) per-token values on a ``grid`` (d, h, w) -> (B, 1, *size) trilinear map."""
    b = values.shape[0]
    return upsample_to(values.reshape(b, 1, *grid), size)
