"""Synthetic volumes, cards and models whose answers are known (shared by the core tests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from HybridAttentionSegLib.core.inference.volume import Volume, ijk_to_ras
from HybridAttentionSegLib.core.models.cards import ModelCard
from torch import nn

LABELS = [
    {"value": 1, "name": "Gray matter", "color": [0.9, 0.7, 0.3],
     "terminology": {"category": {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"},
                     "type": {"scheme": "SCT", "code": "389080003", "meaning": "Gray matter"}}},
    {"value": 2, "name": "White matter", "color": [0.3, 0.5, 0.9],
     "terminology": {"category": {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"},
                     "type": {"scheme": "SCT", "code": "389081004", "meaning": "White matter"}}},
]


def card_dict(architecture="attention_unet", kwargs=None, roi=(32, 32, 32), spacing=None,
              intensity=None, model_id="synthetic", weights_file="weights.safetensors", sha256="0" * 64,
              labels=LABELS, channels=1, overlap=0.25):
    """A valid card dict for tests."""
    return {
        "id": model_id, "title": f"Synthetic {architecture}",
        "architecture": {"name": architecture, "kwargs": dict(kwargs or {})},
        "input": {"channels": channels, "modalities": ["synthetic"]},
        "labels": labels,
        "preprocessing": {"orientation": "RAS", "spacing": list(spacing) if spacing else None,
                          "intensity": intensity or {"method": "none"}},
        "inference": {"roi_size": list(roi), "overlap": overlap, "sw_batch_size": 1},
        "weights": {"file": weights_file, "sha256": sha256},
        "license": "Apache-2.0", "intended_use": "tests only",
    }


def write_random_weights_card(tmp_path: Path, architecture: str, kwargs: dict, roi, **card_kwargs) -> Path:
    """Build ``architecture`` with random weights, save safetensors + card in ``tmp_path``; return the card."""
    from HybridAttentionSegLib.core.inference.engine import build_model
    from safetensors.torch import save_file

    card = ModelCard.from_dict(card_dict(architecture, kwargs, roi, **card_kwargs))
    torch.manual_seed(0)
    model = build_model(card)
    weights = tmp_path / f"{card.id}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    data = card_dict(architecture, kwargs, roi, weights_file=weights.name,
                     sha256=hashlib.sha256(weights.read_bytes()).hexdigest(), **card_kwargs)
    path = tmp_path / f"{card.id}.json"
    path.write_text(json.dumps(data))
    return path


class ThresholdNet(nn.Module):
    """A 'model' whose answer is known: label 1 where the (un-normalised) input exceeds 0.5."""

    def __init__(self, out_channels: int = 3):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x):
        fg = 20.0 * (x[:, :1] - 0.5)
        zeros = torch.zeros_like(fg)
        channels = [zeros, fg] + [zeros - 10.0] * (self.out_channels - 2)
        return torch.cat(channels, dim=1)


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about one axis."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def sphere_volume(shape, directions: np.ndarray, spacing, centre_ras, radius_mm) -> Volume:
    """Binary sphere (1 inside) sampled at the voxel centres of the given grid; grid centred at the origin."""
    affine = np.eye(4)
    affine[:3, :3] = directions @ np.diag(spacing)
    centre_index = (np.array(shape) - 1) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre_index
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    ras = ijk_to_ras(affine, ijk)
    inside = (np.linalg.norm(ras - np.asarray(centre_ras), axis=1) <= radius_mm).reshape(shape)
    return Volume(inside.astype(np.float32), affine, name="sphere")


def centroid(mask: np.ndarray) -> np.ndarray:
    """Voxel-index centroid of a binary mask."""
    return np.argwhere(mask).mean(axis=0)
