"""3D U-Net-style CNN with N attention layers at the stride-16 bottleneck.

* CNN encoder: level 0 at full resolution, level i at stride 2**i; a residual block brings the deepest level
  to the **stride-16 bottleneck grid** ``roi // 16`` (any ROI whose sides are multiples of 16 works: the
  position encoding is a sin-cos function of the token position, computed for the actual grid).
* ``attention_type="self"``: ``num_attention_layers`` MONAI ``TransformerBlock`` (``save_attn=True``) on the
  bottleneck tokens; ``attention_blocks[i].attn.att_mat`` is (B, heads, N, N).
* ``attention_type="cross"``: the bottleneck (decoder-side) tokens are queries; keys/values are the deepest
  encoder level (stride 2**(n-1), 8x more tokens for 4 levels). ``attention_blocks[i].attn.att_mat`` is
  (B, heads, Nq, Nk) and ``attention_blocks[i].kv_grid`` is the key grid of the last forward pass.
* ``num_attention_layers=0`` gives the pure CNN.
* CNN decoder with skips (MONAI ``UnetrUpBlock``) and a 1x1x1 output block.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import CrossAttentionBlock, MLPBlock, TransformerBlock, UnetOutBlock, UnetResBlock
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
    sincos_encoding,
    to_tokens,
)

ATTENTION_TYPES = ("self", "cross")


class CrossAttentionLayer(nn.Module):
    """Pre-norm cross-attention + MLP block whose ``attn.att_mat`` holds (B, heads, Nq, Nk) after forward.

    Written here because MONAI's ``TransformerBlock(with_cross_attention=True)`` always runs self-attention
    first and builds its ``CrossAttentionBlock`` without ``save_attn``; MONAI's ``CrossAttentionBlock`` itself
    stores ``att_mat`` when built with ``save_attn=True``, so it is reused as is.
    """

    def __init__(self, hidden_size: int, context_size: int, num_heads: int, mlp_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden_size)
        self.norm_kv = nn.LayerNorm(context_size)
        self.attn = CrossAttentionBlock(hidden_size, num_heads, dropout_rate=dropout,
                                        context_input_size=context_size, qkv_bias=True, save_attn=True)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = MLPBlock(hidden_size, mlp_dim, dropout)
        self.kv_grid: tuple[int, int, int] | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor, kv_grid=None) -> torch.Tensor:
        self.kv_grid = tuple(kv_grid) if kv_grid is not None else None
        x = x + self.attn(self.norm_q(x), context=self.norm_kv(context))
        return x + self.mlp(self.norm2(x))


class CNNSelfAttention3D(nn.Module):
    """3D U-Net CNN with N self- or cross-attention layers at the stride-16 bottleneck.

    Args:
        in_channels: input channels.
        out_channels: output classes (logits).
        roi_size: accepted for the registry's uniform ``build``; any ROI with sides multiple of 16 works.
        channels: CNN feature channels per level (2 to 5 levels); ``channels[-1]`` is the attention width
            and must be divisible by ``num_heads`` when attention layers are used.
        num_attention_layers: N >= 0 attention layers (0 = pure CNN).
        num_heads: attention heads.
        attention_type: "self" or "cross" (see module docstring).
        dropout: dropout rate inside the attention layers.
        mlp_ratio: MLP width / attention width.
        norm_name: normalisation of the CNN blocks.
    """

    def __init__(self, in_channels: int, out_channels: int, roi_size=None, channels=(16, 32, 64, 128),
                 num_attention_layers: int = 2, num_heads: int = 4, attention_type: str = "self",
                 dropout: float = 0.0, mlp_ratio: float = 2, norm_name="instance"):
        super().__init__()
        if attention_type not in ATTENTION_TYPES:
            message = f"attention_type {attention_type!r} is unknown; use one of {ATTENTION_TYPES}"
            raise ValueError(message)
        if num_attention_layers < 0:
            message = f"num_attention_layers must be >= 0, got {num_attention_layers}"
            raise ValueError(message)
        width = channels[-1]
        if num_attention_layers and width % num_heads:
            message = f"channels[-1] = {width} must be divisible by num_heads {num_heads}"
            raise ValueError(message)
        if roi_size is not None:
            check_divisible(as_roi(roi_size))
        factor = bottleneck_factor(channels)
        self.attention_type = attention_type
        self.kv_stride = 2 ** (len(channels) - 1)

        self.encoder = build_encoder(in_channels, channels, norm_name)
        self.bottleneck = UnetResBlock(3, width, width, kernel_size=3, stride=factor, norm_name=norm_name)
        mlp_dim = int(mlp_ratio * width)
        # The attention layers draw their initial weights from a fork of the RNG: the CNN around them (decoder
        # and output block) starts from the same weights for any number or type of attention layers, so the
        # review's paired comparison (CNN vs CNN + attention, same seed) differs by the attention alone.
        with torch.random.fork_rng(devices=[]):
            if attention_type == "self":
                blocks = [TransformerBlock(width, mlp_dim, num_heads, dropout_rate=dropout, qkv_bias=True,
                                           save_attn=True) for _ in range(num_attention_layers)]
            else:
                blocks = [CrossAttentionLayer(width, width, num_heads, mlp_dim, dropout)
                          for _ in range(num_attention_layers)]
        self.attention_blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(width) if num_attention_layers else nn.Identity()
        self.decoder = build_decoder(width, channels, factor, norm_name)
        self.out = UnetOutBlock(3, channels[0], out_channels)

    @staticmethod
    def token_grid_for(roi) -> tuple[int, int, int]:
        """Query (bottleneck) token grid for ``roi``."""
        return tuple(int(s) // TOKEN_STRIDE for s in as_roi(roi))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(tuple(x.shape[2:]))
        skips = []
        h = x
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        h = self.bottleneck(h)
        if len(self.attention_blocks):
            grid = tuple(h.shape[2:])
            pos = sincos_encoding(grid, h.shape[1], device=h.device, dtype=h.dtype)
            tokens = to_tokens(h) + pos
            if self.attention_type == "self":
                for block in self.attention_blocks:
                    tokens = block(tokens)
            else:
                enc = skips[-1]
                kv_grid = tuple(enc.shape[2:])
                kv_pos = sincos_encoding(kv_grid, enc.shape[1], scale=self.kv_stride / TOKEN_STRIDE,
                                         device=h.device, dtype=h.dtype)
                context = to_tokens(enc) + kv_pos
                for block in self.attention_blocks:
                    tokens = block(tokens, context, kv_grid)
            h = from_tokens(self.norm(tokens), grid)
        return self.out(run_decoder(self.decoder, h, skips))
