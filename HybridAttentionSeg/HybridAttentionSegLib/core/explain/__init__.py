"""Explainer registry: name -> Explainer class. ``uncertainty`` is computed by the engine from probabilities."""

from __future__ import annotations

from .base import Explainer
from .gates import GatesExplainer
from .gradcam import GradCAMExplainer
from .hirescam import HiResCAMExplainer
from .relevance import RelevanceExplainer
from .rollout import RolloutExplainer, SegmentAttentionExplainer
from .window_attention import WindowAttentionExplainer

WINDOW_EXPLAINERS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (GatesExplainer, RolloutExplainer, SegmentAttentionExplainer, WindowAttentionExplainer,
                GradCAMExplainer, HiResCAMExplainer, RelevanceExplainer)
}

__all__ = ["WINDOW_EXPLAINERS", "Explainer"]
