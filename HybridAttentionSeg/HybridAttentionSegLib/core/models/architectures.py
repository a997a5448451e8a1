"""Built-in architectures, declared once. Importing this module registers them.

Each entry says how to build the network for a given ROI, which attention methods it supports
(its natural method first), its ROI constraints and a tiny configuration that the tests build.
"""

from __future__ import annotations

from .networks.cnn_self_attention import CNNSelfAttention3D
from .networks.transunet import TransUNet3D
from .spec import ArchitectureSpec, Constraints

GENERIC = ("grad-cam", "hirescam", "uncertainty")

#: the built-in architectures, in display order; :mod:`.registry` registers them on first use
BUILTIN_ARCHITECTURES: list[ArchitectureSpec] = []


def _build_unetr(in_channels, out_channels, roi_size, **kwargs):
    from monai.networks.nets import UNETR

    kwargs.setdefault("feature_size", 16)
    return UNETR(in_channels, out_channels, img_size=tuple(roi_size), save_attn=True, **kwargs)


def _build_swin_unetr(in_channels, out_channels, roi_size, **kwargs):
    from monai.networks.nets import SwinUNETR

    from .networks.swin_legacy import resolve_downsample

    kwargs.setdefault("feature_size", 24)
    # attention hooks need the eager softmax: never the flash path
    kwargs["use_flash_attention"] = False
    if "downsample" in kwargs:  # "merging-legacy": the pre-1.5 slicing old checkpoints were trained with
        kwargs["downsample"] = resolve_downsample(kwargs["downsample"])
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, **kwargs)


def _build_attention_unet(in_channels, out_channels, roi_size, **kwargs):
    from monai.networks.nets import AttentionUnet

    kwargs.setdefault("channels", (16, 32, 64, 128))
    kwargs.setdefault("strides", (2, 2, 2))
    return AttentionUnet(3, in_channels, out_channels, **kwargs)


def _build_segresnet(in_channels, out_channels, roi_size, **kwargs):
    from monai.networks.nets import SegResNet

    kwargs.setdefault("init_filters", 16)
    return SegResNet(3, in_channels=in_channels, out_channels=out_channels, **kwargs)


def _build_transunet(in_channels, out_channels, roi_size, **kwargs):
    return TransUNet3D(in_channels, out_channels, roi_size=tuple(roi_size), **kwargs)


def _build_cnn_self_attention(in_channels, out_channels, roi_size, **kwargs):
    return CNNSelfAttention3D(in_channels, out_channels, roi_size=tuple(roi_size), **kwargs)


def _unetr_grid(model, roi):
    return tuple(s // 16 for s in roi)


BUILTIN_ARCHITECTURES.append(
    ArchitectureSpec(
        name="unetr",
        family="vit-hybrid",
        description="MONAI UNETR: ViT-B/16 encoder on 16^3 patches, CNN decoder with skips",
        build=_build_unetr,
        attention_methods=("rollout", "segment-attention", "relevance", *GENERIC),
        constraints=Constraints(fixed_roi=True, divisor=16, min_size=32),
        gradcam_layer="decoder2",
        tiny_kwargs={"feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
        tiny_roi=(32, 32, 32),
        vit_blocks=lambda model: list(model.vit.blocks),
        token_grid=_unetr_grid,
    )
)

BUILTIN_ARCHITECTURES.append(
    ArchitectureSpec(
        name="swin_unetr",
        family="swin-hybrid",
        description="MONAI SwinUNETR (v1; kwargs use_v2=true for v2): shifted-window transformer encoder, CNN decoder",
        build=_build_swin_unetr,
        attention_methods=("window-attention", *GENERIC),
        constraints=Constraints(fixed_roi=False, divisor=32, min_size=64),
        gradcam_layer="decoder2",
        tiny_kwargs={"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 2, 4)},
        tiny_roi=(64, 64, 64),
    )
)

BUILTIN_ARCHITECTURES.append(
    ArchitectureSpec(
        name="attention_unet",
        family="attention-gates",
        description="MONAI AttentionUnet: U-Net with additive attention gates on the skip connections",
        build=_build_attention_unet,
        attention_methods=("gates", *GENERIC),
        constraints=Constraints(fixed_roi=False, divisor=8, min_size=16),
        # layers chosen by `hybridseg explain-eval` on mni-tissue-attention-unet (held-out slab, white matter):
        # Grad-CAM on the full-resolution decoder output beat the stride-4 level on deletion (0.77 vs 0.85,
        # random 0.84); HiResCAM scored best at stride 4
        gradcam_layer="model.1",
        hirescam_layer="model.1.submodule.1.submodule.1",
        tiny_kwargs={"channels": (4, 8, 16, 32), "strides": (2, 2, 2)},
        tiny_roi=(32, 32, 32),
    )
)

BUILTIN_ARCHITECTURES.append(
    ArchitectureSpec(
        name="transunet",
        family="vit-hybrid",
        description="TransUNet-style 3D hybrid: CNN encoder, transformer bottleneck, CNN decoder with skips",
        build=_build_transunet,
        attention_methods=("rollout", "segment-attention", "relevance", *GENERIC),
        constraints=Constraints(fixed_roi=True, divisor=16, min_size=32),
        # chosen by `hybridseg explain-eval` on mni-tissue-transunet (held-out slab, white matter): the
        # full-resolution decoder block (deletion 0.78 vs 0.85 at decoder.0, random 0.85)
        gradcam_layer="decoder.3",
        hirescam_layer="decoder.2",
        tiny_kwargs={"channels": (4, 8, 16, 32), "hidden_size": 32, "num_layers": 2, "num_heads": 2},
        tiny_roi=(32, 32, 32),
        vit_blocks=lambda model: list(model.transformer_blocks),
        token_grid=lambda model, roi: model.token_grid,
    )
)

BUILTIN_ARCHITECTURES.append(
    ArchitectureSpec(
        name="cnn_self_attention",
        family="cnn+self-attention",
        description="3D U-Net CNN with N self-attention (or cross-attention) layers at the bottleneck",
        build=_build_cnn_self_attention,
        attention_methods=("rollout", "segment-attention", "relevance", *GENERIC),
        constraints=Constraints(fixed_roi=False, divisor=16, min_size=32),
        gradcam_layer="decoder.0",
        tiny_kwargs={"channels": (4, 8, 16, 32), "num_attention_layers": 2, "num_heads": 2},
        tiny_roi=(32, 32, 32),
        vit_blocks=lambda model: list(model.attention_blocks),
        token_grid=lambda model, roi: model.token_grid_for(roi),
    )
)

BUILTIN_ARCHITECTURES.append(
    ArchitectureSpec(
        name="segresnet",
        family="cnn",
        description="MONAI SegResNet: residual CNN encoder-decoder baseline (no attention)",
        build=_build_segresnet,
        attention_methods=GENERIC,
        constraints=Constraints(fixed_roi=False, divisor=8, min_size=16),
        gradcam_layer="up_layers.1",
        tiny_kwargs={"init_filters": 8, "blocks_down": (1, 1, 1, 1), "blocks_up": (1, 1, 1)},
        tiny_roi=(32, 32, 32),
    )
)
