"""SwinUNETR's pre-1.5 patch merging, for checkpoints trained with MONAI <= 1.4.

MONAI 1.5.0 (PR #8285, "Fix PatchMerging duplicate merging") changed three of the eight voxel slices that
SwinUNETR's default ``PatchMerging`` concatenates. Keys and shapes stayed the same, so a strict load of an old
checkpoint still passes but computes a different function (on the golden test volumes: max |dp| 0.42, 11 % of
labels change). :class:`LegacyPatchMerging` restores the slicing of MONAI 0.9.0-1.4.0 and is handed to
``SwinUNETR(downsample=...)``, which accepts a module class: MONAI itself is not patched.

Card spelling: ``architecture.kwargs.downsample: "merging-legacy"`` (see :func:`resolve_downsample`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMerging

#: card value of ``architecture.kwargs.downsample`` that selects :class:`LegacyPatchMerging`
LEGACY_MERGING = "merging-legacy"


class LegacyPatchMerging(PatchMerging):
    """``PatchMerging`` with the slice order of MONAI 0.9.0-1.4.0 (x4..x6 repeat x2, x3 as they did then)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:  # 2D inputs were never affected by the change
            return super().forward(x)
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat(
            [
                x[:, 0::2, 0::2, 0::2, :],
                x[:, 1::2, 0::2, 0::2, :],
                x[:, 0::2, 1::2, 0::2, :],
                x[:, 0::2, 0::2, 1::2, :],
                x[:, 1::2, 0::2, 1::2, :],  # MONAI >= 1.5: x[:, 1::2, 1::2, 0::2]
                x[:, 0::2, 1::2, 0::2, :],  # MONAI >= 1.5: x[:, 1::2, 0::2, 1::2]
                x[:, 0::2, 0::2, 1::2, :],  # MONAI >= 1.5: x[:, 0::2, 1::2, 1::2]
                x[:, 1::2, 1::2, 1::2, :],
            ],
            -1,
        )
        return self.reduction(self.norm(x))


def resolve_downsample(value):
    """Card ``downsample`` value -> what ``SwinUNETR(downsample=...)`` takes (MONAI names pass through)."""
    return LegacyPatchMerging if value == LEGACY_MERGING else value
