"""SwinUNETR window-attention maps: attention received per token in every shifted/unshifted window.

For every ``SwinTransformerBlock`` a forward pre-hook records the block's geometry (its input is
(B, D, H, W, C): feature-map size, effective window/shift sizes from MONAI's ``get_window_size``, padded
size), and a forward hook on its ``attn.softmax`` (the ``nn.Softmax`` inside ``WindowAttention``) reduces
the (B*nW, heads, N, N) probabilities **inside the hook** to the attention each key token receives, mean over
heads and query rows, (B*nW, N); the full tensors (1.36 GiB per 96^3 window at full size) are never kept.

``window_map`` then, per block: multiplies by N (uniform attention = 1), reverses the window partition
(MONAI's ``window_reverse``), rolls by +shift for shifted blocks, crops the padding and trilinearly upsamples
to the window. Blocks of one stage (same feature-map size) are averaged, then the stages are averaged
with equal weight (rollout across Swin stages is ill-defined: windows are local and the resolution changes
at each patch merging, so a plain mean of the per-stage maps is used).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from monai.networks.nets.swin_unetr import SwinTransformerBlock, get_window_size, window_reverse

from ..errors import UnsupportedMethodError
from .base import Explainer, upsample_to


class WindowAttentionExplainer(Explainer):
    """Mean over Swin stages of the per-token attention received inside the (shifted) windows."""

    name = "window-attention"

    def __init__(self, model, spec, roi_size, target_class=None):
        super().__init__(model, spec, roi_size, target_class)
        self.blocks = [m for m in model.modules() if isinstance(m, SwinTransformerBlock)]
        if not self.blocks:
            message = (f"architecture {spec.name!r} has no Swin transformer blocks, so window-attention has "
                       "nothing to show; choose another attention method")
            raise UnsupportedMethodError(message)
        self._geometry: dict[int, tuple] = {}
        self._received: dict[int, torch.Tensor] = {}
        self._flash: list[tuple] = []

    def attach(self) -> None:
        self._clear()
        self._flash = []
        for index, block in enumerate(self.blocks):
            # the SDPA path bypasses ``attn.softmax`` (the hooks would never fire); eager equals it to ~1e-6
            self._flash.append((block.attn, getattr(block.attn, "use_flash_attention", False)))
            block.attn.use_flash_attention = False
            self._handles.append(block.register_forward_pre_hook(partial(self._record_geometry, index)))
            self._hook(block.attn.softmax, partial(self._reduce_attention, index))

    def detach(self) -> None:
        super().detach()
        for attn, flash in self._flash:
            attn.use_flash_attention = flash
        self._flash = []
        self._clear()

    def _clear(self) -> None:
        self._geometry.clear()
        self._received.clear()

    def _record_geometry(self, index, block, args):
        x = args[0]
        if x.dim() != 5:
            return
        b, d, h, w, _ = x.shape
        window, shift = get_window_size((d, h, w), block.window_size, block.shift_size)
        padded = tuple(math.ceil(s / ws) * ws for s, ws in zip((d, h, w), window, strict=True))
        self._geometry[index] = (b, (d, h, w), tuple(window), tuple(shift), padded)

    def _reduce_attention(self, index, _module, _inputs, output):
        # (B*nW, heads, N, N) -> attention received per key token (B*nW, N); reduce here, keep nothing big
        self._received[index] = output.detach().float().mean(dim=(1, 2))

    def _block_map(self, index: int) -> tuple[tuple, torch.Tensor]:
        b, size, window, shift, padded = self._geometry[index]
        received = self._received[index] * math.prod(window)
        n_windows = math.prod(p // ws for p, ws in zip(padded, window, strict=True))
        if received.shape != (b * n_windows, math.prod(window)):
            message = f"window attention of shape {tuple(received.shape)} does not match the block geometry"
            raise RuntimeError(message)
        volume = window_reverse(received.reshape(-1, *window, 1), window, [b, *padded])  # (B, Dp, Hp, Wp, 1)
        if any(shift):
            volume = torch.roll(volume, shifts=shift, dims=(1, 2, 3))
        volume = volume[:, : size[0], : size[1], : size[2], 0].unsqueeze(1)
        return size, volume

    def window_map(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        indices = [i for i in range(len(self.blocks)) if i in self._received and i in self._geometry]
        if not indices or any(self._geometry[i][0] != x.shape[0] for i in indices):
            message = "no window attention was captured; call the model inside `with explainer:`"
            raise RuntimeError(message)
        out_size = tuple(x.shape[2:])
        stages: dict[tuple, list[torch.Tensor]] = {}
        for index in indices:
            size, volume = self._block_map(index)
            stages.setdefault(size, []).append(upsample_to(volume, out_size))
        self._clear()
        per_stage = [torch.stack(maps).mean(dim=0) for maps in stages.values()]
        return torch.stack(per_stage).mean(dim=0).clamp_min(0.0)
