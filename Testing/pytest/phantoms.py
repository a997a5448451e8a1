"""A small labelled phantom with an image, a reference and model-like probabilities (correction tests).

Two nested structures like grey and white matter: a core sphere (label 2, bright) inside a shell (label 1,
mid-grey) on a dark background, with Gaussian noise. The "model" probabilities are the reference one-hot maps
blurred by one voxel, so their argmax equals the reference except at a few boundary voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LABELS = [
    {"value": 1, "name": "Shell", "color": [0.9, 0.6, 0.2],
     "terminology": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
                     "type": {"scheme": "SCT", "code": "389081007", "meaning": "Gray matter"}}},
    {"value": 2, "name": "Core", "color": [0.2, 0.5, 0.9]},
]
INTENSITY = {0: 0.1, 1: 0.5, 2: 0.9}


@dataclass
class Phantom:
    image: np.ndarray  # (I, J, K) float32
    reference: np.ndarray  # (I, J, K) uint8
    probabilities: np.ndarray  # (3, I, J, K) float32
    affine: np.ndarray
    spacing: tuple

    @property
    def labelmap(self) -> np.ndarray:
        """The model's answer: argmax of the probabilities."""
        return self.probabilities.argmax(0).astype(np.uint8)


def distance_mm(shape, centre, spacing) -> np.ndarray:
    """Distance in mm of every voxel of ``shape`` from voxel-index ``centre`` on an axis-aligned grid."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True)))


def ball(shape, centre, radius_mm, spacing) -> np.ndarray:
    """Boolean ball of ``radius_mm`` around voxel-index ``centre``."""
    return distance_mm(shape, centre, spacing) <= radius_mm


def make_phantom(shape=(48, 48, 40), spacing=(1.0, 1.0, 1.25), seed: int = 0) -> Phantom:
    """The phantom on an axis-aligned grid with the given spacing, centred at RAS (0, 0, 0)."""
    rng = np.random.default_rng(seed)
    spacing = tuple(float(s) for s in spacing)
    centre = [(n - 1) / 2.0 for n in shape]
    radius = distance_mm(shape, centre, spacing)
    reference = np.zeros(shape, np.uint8)
    reference[radius <= 18.0] = 1
    reference[radius <= 10.0] = 2
    image = np.vectorize(INTENSITY.get)(reference).astype(np.float32)
    image += rng.normal(0.0, 0.03, shape).astype(np.float32)
    onehot = np.stack([(reference == v).astype(np.float32) for v in range(3)])
    blurred = np.stack([ndimage.gaussian_filter(channel, 1.0) for channel in onehot]) + 1e-3
    probabilities = (blurred / blurred.sum(0, keepdims=True)).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-c * s for c, s in zip(centre, spacing, strict=False)]
    return Phantom(image, reference, probabilities, affine, spacing)
