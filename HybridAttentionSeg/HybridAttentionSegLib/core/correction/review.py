"""Uncertainty review: where the model is unsure, grouped per segment and ranked for a reviewer.

The uncertainty map is the engine's ``uncertainty`` map (softmax entropy, plus flip-TTA variance with
``--tta``) or :func:`entropy` of the kept probabilities; both are in [0, 1]. An *uncertain region* is a
connected (26-connected) group of voxels with uncertainty >= ``threshold`` that concern the same segment: the
segment the voxel is most likely to be apart from background (from the probabilities), or without
probabilities the label there (background voxels take the segment found within two voxels). A morphological
opening (``opening`` iterations of the 6-neighbour cross, then one 26-neighbour dilation inside the uncertain
voxels to give blobs their edges back) first drops the thin bands that every boundary has, so that what is
listed are blobs worth a look. Regions are ranked by ``score = voxels x mean uncertainty`` (the sum of the
uncertainty over the region).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from ..inference.volume import ijk_to_ras, spacing_of

logger = logging.getLogger(__name__)


def entropy(probabilities) -> np.ndarray:
    """Entropy of (C, I, J, K) probabilities (or C (I, J, K) arrays) over log(C): (I, J, K) float32 in [0, 1]."""
    channels = len(probabilities)
    shape = np.shape(probabilities[0])
    if channels < 2:
        return np.zeros(shape, np.float32)
    total = np.zeros(shape, np.float32)
    for channel in range(channels):  # one channel at a time: no (C, I, J, K) temporaries
        p = np.clip(probabilities[channel].astype(np.float32), 1e-8, 1.0)
        total -= p * np.log(p)
    total /= math.log(channels)
    return np.clip(total, 0.0, 1.0, out=total)


def segment_of_voxels(labelmap: np.ndarray, mask: np.ndarray,
                      probabilities: np.ndarray | None = None) -> np.ndarray:
    """For the voxels in ``mask``, the segment each concerns (uint8 values, in ``mask`` order)."""
    if probabilities is not None and len(probabilities) > 1:
        index = np.nonzero(mask)
        foreground = np.stack([np.asarray(probabilities[c])[index] for c in range(1, len(probabilities))])
        return (np.argmax(foreground, axis=0) + 1).astype(np.uint8)
    labels = np.asarray(labelmap, dtype=np.uint8)
    near = ndimage.grey_dilation(labels, size=(5, 5, 5))  # the segment within two voxels, for background
    values = labels[mask]
    background = values == 0
    values[background] = near[mask][background]
    return values


def uncertain_regions(uncertainty: np.ndarray, labelmap: np.ndarray, affine: np.ndarray | None = None,
                      probabilities: np.ndarray | None = None, threshold: float = 0.5, min_voxels: int = 5,
                      max_regions: int = 50, opening: int = 1, block_mm: float = 30.0,
                      labels: list[dict] | None = None) -> list[dict]:
    """Uncertain regions, best first (rules in the module docstring).

    Args:
        uncertainty: (I, J, K) map in [0, 1].
        labelmap: (I, J, K) labelmap on the same grid.
        affine: IJK->RAS affine (for ``centroid_ras``, ``focus_ras`` and ``volume_ml``); identity if None.
        probabilities: (C, I, J, K) probabilities (channel = label value; or a sequence of C (I, J, K)
            arrays) to assign voxels to segments.
        threshold: uncertainty at or above which a voxel counts as uncertain.
        min_voxels: smaller regions are dropped.
        max_regions: at most this many regions are returned.
        opening: opening iterations (0: keep thin bands).
        block_mm: a region larger than a ``block_mm`` cube is cut along a fixed grid of such cubes, so every
            listed region can be seen at one place (0: no cutting).
        labels: card/segmentation labels (``{"value", "name"}``) to name the segments.

    Returns:
        ``[{"rank", "segment", "name", "voxels", "volume_ml", "mean_uncertainty", "score", "centroid_ijk",
        "centroid_ras", "focus_ijk", "focus_ras"}]``; ``focus`` is the region's voxel nearest its centroid (a
        point inside the region to move the views to, even for a curved region).
    """
    uncertainty = np.asarray(uncertainty, dtype=np.float32)
    if uncertainty.shape != np.shape(labelmap):
        message = f"uncertainty grid {uncertainty.shape} differs from the labelmap grid {np.shape(labelmap)}"
        raise ValueError(message)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    mask = uncertainty >= threshold
    if opening > 0 and mask.any():
        # opening drops thin bands but also the edges and corners of blobs: give those back (one 26-step)
        opened = ndimage.binary_opening(mask, iterations=int(opening))
        mask &= ndimage.binary_dilation(opened, structure=np.ones((3, 3, 3), bool))
    if not mask.any():
        return []
    segments = np.zeros(mask.shape, np.uint8)
    segments[mask] = segment_of_voxels(labelmap, mask, probabilities)
    components = np.zeros(mask.shape, np.int32)
    count = 0
    for value in np.unique(segments[mask]).tolist():
        part, n = ndimage.label(segments == value, structure=np.ones((3, 3, 3), bool))
        components[part > 0] = part[part > 0] + count
        count += n
    regions = _measure(components, uncertainty, segments, spacing_of(affine), block_mm, min_voxels)
    regions.sort(key=lambda r: (-r["score"], r["segment"]))
    regions = regions[:max_regions]
    names = {int(label["value"]): label["name"] for label in (labels or [])}
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    for rank, region in enumerate(regions, start=1):
        region["rank"] = rank
        region["name"] = names.get(region["segment"], "background" if region["segment"] == 0
                                   else f"Label {region['segment']}")
        region["volume_ml"] = round(region["voxels"] * voxel_ml, 4)
        region["centroid_ras"] = [round(float(x), 3) for x in ijk_to_ras(affine, region["centroid_ijk"])[0]]
        region["focus_ras"] = [round(float(x), 3) for x in ijk_to_ras(affine, region["focus_ijk"])[0]]
    return regions


def _measure(components: np.ndarray, uncertainty: np.ndarray, segments: np.ndarray, spacing: np.ndarray,
             block_mm: float, min_voxels: int) -> list[dict]:
    """Regions (component x grid block): size, mean uncertainty, score, centroid and focus voxel."""
    index = np.nonzero(components)
    coords = np.stack(index, axis=1)
    keys = components[index].astype(np.int64)
    if block_mm > 0:
        blocks = np.floor(coords * spacing / block_mm).astype(np.int64)
        dims = blocks.max(axis=0) + 1
        keys = keys * int(np.prod(dims)) + np.ravel_multi_index(tuple(blocks.T), tuple(dims))
    _, region_of, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    region_of = region_of.ravel()
    sums = np.bincount(region_of, weights=uncertainty[index])
    centroids = np.stack([np.bincount(region_of, weights=axis) for axis in index], axis=1) / sizes[:, None]
    segment_of = np.zeros(len(sizes), np.int64)
    segment_of[region_of] = segments[index]
    order = np.argsort(region_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    regions = []
    for region in np.flatnonzero(sizes >= max(1, min_voxels)).tolist():
        members = coords[order[starts[region]:starts[region + 1]]]
        nearest = members[np.argmin(((members - centroids[region]) ** 2).sum(axis=1))]
        regions.append({
            "segment": int(segment_of[region]), "voxels": int(sizes[region]),
            "mean_uncertainty": round(float(sums[region] / sizes[region]), 4),
            "score": round(float(sums[region]), 3),
            "centroid_ijk": [round(float(c), 2) for c in centroids[region]],
            "focus_ijk": [int(c) for c in nearest],
        })
    return regions
