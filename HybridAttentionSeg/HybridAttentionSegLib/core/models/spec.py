"""What an architecture declares: its builder, attention methods, input constraints and explainer hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

#: every attention/explanation method name the engine knows, in display order
ATTENTION_METHODS = ("gates", "rollout", "segment-attention", "relevance", "window-attention", "grad-cam", "hirescam",
                     "uncertainty")


@dataclass(frozen=True)
class Constraints:
    """Input-size constraints of an architecture, applied to the sliding-window ROI.

    Attributes:
        fixed_roi: the ROI must equal ``roi_size`` as built (ViT position embeddings: UNETR, TransUNet...).
        divisor: every ROI side must be divisible by this.
        min_size: smallest ROI side the network accepts (normalisation at the bottleneck needs > 1 voxel).
    """

    fixed_roi: bool = False
    divisor: int = 1
    min_size: int = 16

    def check_roi(self, roi: tuple[int, ...]) -> None:
        """Raise ValueError if ``roi`` violates the constraints."""
        bad = [s for s in roi if s % self.divisor or s < self.min_size]
        if bad:
            message = (
                f"ROI {tuple(roi)} is invalid: every side must be a multiple of {self.divisor} "
                f"and at least {self.min_size}; fix roi_size in the model card"
            )
            raise ValueError(message)

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"fixed_roi": self.fixed_roi, "divisor": self.divisor, "min_size": self.min_size}


@dataclass(frozen=True)
class ArchitectureSpec:
    """One registered architecture.

    Attributes:
        name: registry name used everywhere (CLI, cards).
        family: "cnn", "attention-gates", "vit-hybrid", "swin-hybrid" or "cnn+self-attention".
        description: one line for listings.
        build: ``build(in_channels, out_channels, roi_size, **kwargs) -> nn.Module``.
        attention_methods: explainer names it supports (natural method first).
        constraints: ROI constraints.
        gradcam_layer: module name used as Grad-CAM target layer (the layer that scored best in
            ``hybridseg explain-eval`` for the bundled model of the architecture, where there is one).
        hirescam_layer: module name used by HiResCAM (default: ``gradcam_layer``).
        tiny_kwargs: kwargs building a tiny variant for tests.
        tiny_roi: ROI used with ``tiny_kwargs`` in tests.
        vit_blocks: callable returning the transformer blocks whose ``attn.att_mat`` holds attention
            (``save_attn``-style), for rollout / segment-attention; ``None`` if not a ViT hybrid.
        token_grid: callable ``(model, roi) -> (d, h, w)`` token grid of those blocks.
    """

    name: str
    family: str
    description: str
    build: Callable[..., nn.Module]
    attention_methods: tuple[str, ...]
    constraints: Constraints = field(default_factory=Constraints)
    gradcam_layer: str = ""
    hirescam_layer: str = ""
    tiny_kwargs: dict = field(default_factory=dict)
    tiny_roi: tuple[int, int, int] = (32, 32, 32)
    vit_blocks: Callable[[nn.Module], list] | None = None
    token_grid: Callable[[nn.Module, tuple[int, int, int]], tuple[int, int, int]] | None = None

    @property
    def natural_method(self) -> str:
        """The architecture's own attention method (first non-generic one)."""
        return self.attention_methods[0]

    def summary(self) -> dict:
        """JSON-ready listing entry."""
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "attention_methods": list(self.attention_methods),
            "natural_attention_method": self.natural_method,
            "constraints": self.constraints.as_dict(),
            "gradcam_layer": self.gradcam_layer,
        }
