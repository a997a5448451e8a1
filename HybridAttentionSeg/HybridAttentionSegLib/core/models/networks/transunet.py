"""TransUNet-style 3D hybrid (Chen et al. 2021, arXiv 2102.04306) composed from MONAI blocks.

Layout for ``channels=(c0, ..., c_{n-1})`` and a fixed ROI (every side a multiple of 16):

* CNN encoder: level 0 at full resolution, level i at stride 2**i (``n - 1`` stride-2 residual blocks).
* Patch embedding: a strided conv from the deepest level to the **stride-16 token grid** ``roi // 16``.
* Learnable position embedding over that fixed grid (so the ROI is fixed, like UNETR), then
  ``num_layers`` MONAI ``TransformerBlock`` with ``save_attn=True``: after a forward pass each
  ``transformer_blocks[i].attn.att_mat`` holds the (B, heads, N, N) attention probabilities.
* CNN decoder with the encoder skips (MONAI ``UnetrUpBlock``) and a 1x1x1 output block.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import TransformerBlock, UnetOutBlock
from torch import nn

from ._common import (
    TOKEN_STRIDE,
    as_roi,
    bottleneck_factor,
    build_decoder,
    build_encoder,
    check_divisible,
    from_tokens,
    run_decoder,
    to_tokens,
)


class TransUNet3D(nn.Module):
    """TransUNet-style CNN encoder + transformer bottleneck (stride-16 tokens) + CNN decoder.

    Args:
        in_channels: input channels.
        out_channels: output classes (logits).
        roi_size: fixed input size (D, H, W); each side a multiple of 16.
        channels: CNN feature channels per level (2 to 5 levels).
        hidden_size: transformer width.
        num_layers: number of transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        mlp_ratio: MLP width / ``hidden_size``.
        dropout: dropout rate inside the transformer.
        norm_name: normalisation of the CNN blocks.
    """

    def __init__(self, in_channels: int, out_channels: int, roi_size, channels=(16, 32, 64, 128),
                 hidden_size: int = 256, num_layers: int = 6, num_heads: int = 8, mlp_ratio: float = 4,
                 dropout: float = 0.0, norm_name="instance"):
        super().__init__()
        roi = as_roi(roi_size)
        check_divisible(roi)
        if hidden_size % num_heads:
            message = f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}"
            raise ValueError(message)
        factor = bottleneck_factor(channels)
        self.roi_size = roi
        self.token_grid = tuple(s // TOKEN_STRIDE for s in roi)
        n_tokens = self.token_grid[0] * self.token_grid[1] * self.token_grid[2]

        self.encoder = build_encoder(in_channels, channels, norm_name)
        self.patch_embed = nn.Conv3d(channels[-1], hidden_size, kernel_size=factor, stride=factor)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, hidden_size))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(hidden_size, int(mlp_ratio * hidden_size), num_heads, dropout_rate=dropout,
                             qkv_bias=True, save_attn=True)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.decoder = build_decoder(hidden_size, channels, factor, norm_name)
        self.out = UnetOutBlock(3, channels[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.roi_size:
            message = (f"TransUNet3D was built for input size {self.roi_size} (learned position embedding) "
                       f"but got {tuple(x.shape[2:])}; use roi_size {self.roi_size} for sliding-window "
                       "inference")
            raise ValueError(message)
        skips = []
        h = x
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        tokens = self.pos_drop(to_tokens(self.patch_embed(h)) + self.pos_embed)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        h = from_tokens(self.norm(tokens), self.token_grid)
        return self.out(run_decoder(self.decoder, h, skips))
