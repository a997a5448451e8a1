"""Attention U-Net gate maps: the sigmoid gates of every ``*.attention.psi`` module, averaged over levels."""

from __future__ import annotations

import torch

from ..errors import UnsupportedMethodError
from .base import Explainer, upsample_to

GATE_SUFFIX = "attention.psi"


class GatesExplainer(Explainer):
    """Mean over levels of the attention-gate outputs, each trilinearly upsampled to the window.

    MONAI's ``AttentionBlock.psi`` ends in a sigmoid, so every gate is a (B, 1, d, h, w) map in [0, 1] at its
    skip resolution (full, 1/2, 1/4...). The levels are combined by their **mean**: a voxel is bright when the
    gates at several resolutions let its features through. (A product would emphasise agreement but goes to ~0
    as soon as one level closes, and it shrinks with the number of levels.) Gates are single-channel, so the
    map is class-agnostic.
    """

    name = "gates"

    def __init__(self, model, spec, roi_size, target_class=None):
        super().__init__(model, spec, roi_size, target_class)
        self._gate_modules = [(n, m) for n, m in model.named_modules() if n.endswith(GATE_SUFFIX)]
        if not self._gate_modules:
            message = (f"architecture {spec.name!r} has no attention gates (no module named "
                       f"'*.{GATE_SUFFIX}'); choose another attention method")
            raise UnsupportedMethodError(message)
        self._gates: dict[str, torch.Tensor] = {}

    def attach(self) -> None:
        self._gates.clear()
        for name, module in self._gate_modules:
            self._hook(module, self._make_hook(name))

    def detach(self) -> None:
        super().detach()
        self._gates.clear()

    def _make_hook(self, name):
        def hook(_module, _inputs, output):
            self._gates[name] = output.detach()
        return hook

    def window_map(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        gates = [self._gates.get(name) for name, _ in self._gate_modules]
        if any(g is None or g.shape[0] != x.shape[0] for g in gates):
            message = "no attention-gate output was captured; call the model inside `with explainer:`"
            raise RuntimeError(message)
        size = tuple(x.shape[2:])
        maps = torch.stack([upsample_to(g, size) for g in gates], dim=0)
        self._gates.clear()
        return maps.mean(dim=0).clamp_min(0.0)
