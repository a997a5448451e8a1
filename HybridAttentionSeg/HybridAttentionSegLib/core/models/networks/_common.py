"""Pieces shared by the custom networks: CNN encoder/decoder stacks and a 3D sin-cos position encoding."""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import UnetResBlock, UnetrUpBlock
from torch import nn

#: every custom hybrid puts its tokens on a grid of stride 16 (registered divisor 16)
TOKEN_STRIDE = 16


def as_roi(roi_size) -> tuple[int, int, int]:
    """Normalise an int or 3-sequence ROI to a 3-tuple of ints."""
    if isinstance(roi_size, int):
        return (roi_size,) * 3
    roi = tuple(int(s) for s in roi_size)
    if len(roi) != 3:
        message = f"roi_size {roi_size!r} must have 3 sides; pass (D, H, W)"
        raise ValueError(message)
    return roi


def check_divisible(roi, divisor: int = TOKEN_STRIDE) -> None:
    """Raise ValueError unless every side of ``roi`` is a positive multiple of ``divisor``."""
    if any(s % divisor or s < divisor for s in roi):
        message = f"ROI {tuple(roi)} is invalid: every side must be a positive multiple of {divisor}"
        raise ValueError(message)


def bottleneck_factor(channels) -> int:
    """Stride from the deepest CNN level (``len(channels) - 1`` halvings) down to the stride-16 token grid."""
    n = len(channels)
    if not 2 <= n <= 5:
        message = f"channels {tuple(channels)} must have 2 to 5 levels (the token grid is at stride 16)"
        raise ValueError(message)
    return TOKEN_STRIDE // 2 ** (n - 1)


def build_encoder(in_channels: int, channels, norm_name) -> nn.ModuleList:
    """Level 0 at full resolution, level i at stride 2**i (residual conv blocks, stride-2 downsampling)."""
    blocks = [UnetResBlock(3, in_channels, channels[0], kernel_size=3, stride=1, norm_name=norm_name)]
    for i in range(1, len(channels)):
        blocks.append(UnetResBlock(3, channels[i - 1], channels[i], kernel_size=3, stride=2,
                                   norm_name=norm_name))
    return nn.ModuleList(blocks)


def build_decoder(bottleneck_channels: int, channels, factor: int, norm_name) -> nn.ModuleList:
    """``decoder[0]`` lifts the stride-16 grid to the deepest encoder level, then one up-block per level."""
    blocks = [UnetrUpBlock(3, bottleneck_channels, channels[-1], kernel_size=3, upsample_kernel_size=factor,
                           norm_name=norm_name, res_block=True)]
    for i in range(len(channels) - 1, 0, -1):
        blocks.append(UnetrUpBlock(3, channels[i], channels[i - 1], kernel_size=3, upsample_kernel_size=2,
                                   norm_name=norm_name, res_block=True))
    return nn.ModuleList(blocks)


def run_decoder(decoder: nn.ModuleList, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
    """Apply ``build_decoder`` blocks with the encoder outputs ``skips`` (full resolution first)."""
    for block, skip in zip(decoder, reversed(skips), strict=True):
        x = block(x, skip)
    return x


def sincos_encoding(grid, dim: int, scale: float = 1.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """3D sin-cos position encoding (1, d*h*w, dim) for a token grid, in units of stride-16 tokens.

    ``scale`` is the grid's stride divided by 16, so a finer key grid (scale 0.5) gets the physical positions
    of its tokens. MONAI's ``build_sincos_position_embedding`` needs ``dim % 6 == 0`` and integer positions;
    this helper pads any ``dim`` with zeros and takes fractional positions, hence these few lines.
    """
    n_freq = dim // 6
    axes = [(torch.arange(s, device=device, dtype=torch.float32) + 0.5) * scale - 0.5 for s in grid]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    parts = []
    if n_freq:
        omega = 1.0 / (10000.0 ** (torch.arange(n_freq, device=device, dtype=torch.float32) / n_freq))
        for coord in (zz, yy, xx):
            angles = coord.reshape(-1, 1) * omega.reshape(1, -1) * math.pi
            parts += [torch.sin(angles), torch.cos(angles)]
    enc = torch.cat(parts, dim=1) if parts else torch.zeros(zz.numel(), 0, device=device)
    pad = dim - enc.shape[1]
    if pad:
        enc = torch.cat([enc, torch.zeros(enc.shape[0], pad, device=device)], dim=1)
    return enc.unsqueeze(0).to(dtype)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, d, h, w) -> (B, d*h*w, C), row-major (d, h, w) token order."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(t: torch.Tensor, grid) -> torch.Tensor:
    """(B, N, C) -> (B, C, d, h, w)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid)
