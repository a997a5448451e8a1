"""Measuring click correction: synthetic errors, simulated clicks and the Dice-per-click curve.

The simulated user follows the usual interactive-segmentation protocol (as in DeepEdit/DeepGrow and RITM
evaluations): the error voxels (labelmap != reference) are split into connected components per reference
label; the next click goes to the point deepest inside the largest component (maximum of its Euclidean
distance transform in mm, the volume border counting as boundary), with the reference label there (0 =
background). All clicks so far are replayed on the starting labelmap at every step
(:func:`.refine.apply_clicks`).

Synthetic errors imitate a model's mistakes consistently in the labelmap *and* the probabilities:

* a **missing chunk**: a ball of a segment is set to background, and 90% of that segment's probability there
  is moved to the background channel (the model "did not see it");
* a **false blob**: a ball of background next to the structures is given a segment, with the probabilities
  pulled 80% of the way towards that segment (the model "saw something").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .refine import BACKGROUND, Click, apply_clicks

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- metrics
def dice_scores(labelmap: np.ndarray, reference: np.ndarray, values: Sequence[int]) -> dict[int, float]:
    """Dice per label value (1.0 where both are empty)."""
    out = {}
    for value in values:
        a = labelmap == value
        b = reference == value
        total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
        out[int(value)] = 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
    return out


def mean_dice(labelmap: np.ndarray, reference: np.ndarray, values: Sequence[int]) -> float:
    """Mean of :func:`dice_scores` over ``values``."""
    scores = dice_scores(labelmap, reference, values)
    return float(np.mean(list(scores.values()))) if scores else 1.0


# ------------------------------------------------------------------------------------------------- clicks
def next_click(labelmap: np.ndarray, reference: np.ndarray,
               spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Click | None:
    """The simulated user's next click, or None when the labelmap equals the reference."""
    error = labelmap != reference
    if not error.any():
        return None
    best_size, best_mask, best_value = 0, None, 0
    for value in np.unique(reference[error]).tolist():
        components, count = ndimage.label(error & (reference == value))
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        index = int(np.argmax(sizes))
        if sizes[index] > best_size:
            best_size, best_mask, best_value = int(sizes[index]), components == index + 1, int(value)
    return Click(deepest_point(best_mask, spacing), best_value)


def deepest_point(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[int, int, int]:
    """Voxel of ``mask`` farthest (in mm) from its boundary; the volume border counts as boundary."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = np.pad(mask[box], 1)
    distance = ndimage.distance_transform_edt(crop, sampling=spacing)[1:-1, 1:-1, 1:-1]
    local = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return tuple(int(s.start + c) for s, c in zip(box, local, strict=False))


@dataclass
class CurvePoint:
    """Dice after ``clicks`` clicks (the last one is ``click``; None for the starting point)."""

    clicks: int
    mean_dice: float
    dice: dict[int, float]
    click: Click | None = None
    changed: int = 0


def click_curve(image: np.ndarray, labelmap: np.ndarray, probabilities: np.ndarray | None,
                reference: np.ndarray, values: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0),
                max_clicks: int = 10, **refine_kwargs) -> list[CurvePoint]:
    """Dice after 0, 1, ..., ``max_clicks`` simulated clicks (stops early when no error is left)."""
    values = [int(v) for v in values]
    curve = [CurvePoint(0, mean_dice(labelmap, reference, values), dice_scores(labelmap, reference, values))]
    clicks: list[Click] = []
    current = np.asarray(labelmap, dtype=np.uint8)
    for n in range(1, max_clicks + 1):
        click = next_click(current, reference, spacing)
        if click is None:
            break
        clicks.append(click)
        report: list[dict] = []
        current = apply_clicks(image, labelmap, probabilities, clicks, spacing, report=report,
                               **refine_kwargs)
        curve.append(CurvePoint(n, mean_dice(current, reference, values),
                                dice_scores(current, reference, values), click, report[-1]["changed"]))
    return curve


def recovered_fraction(curve: list[CurvePoint], clean_dice: float, clicks: int = 5) -> float:
    """Share of the Dice lost to the errors that ``clicks`` clicks won back (can exceed 1)."""
    lost = clean_dice - curve[0].mean_dice
    point = curve[min(clicks, len(curve) - 1)]
    return float((point.mean_dice - curve[0].mean_dice) / lost) if lost > 0 else 1.0


# ------------------------------------------------------------------------------------------------- errors
@dataclass
class SyntheticErrors:
    """A labelmap and probabilities with known errors, and where they were put."""

    labelmap: np.ndarray
    probabilities: np.ndarray
    regions: list[dict] = field(default_factory=list)


def add_synthetic_errors(labelmap: np.ndarray, probabilities: np.ndarray, values: Sequence[int],
                         spacing: Sequence[float] = (1.0, 1.0, 1.0), chunks: int = 3,
                         chunk_radius_mm: float = 12.0, blobs: int = 1, blob_radius_mm: float = 8.0,
                         seed: int = 0) -> SyntheticErrors:
    """Remove ``chunks`` balls of segments (cycling through ``values``) and add ``blobs`` false blobs.

    Chunk centres are random voxels of the segment among the densest half (so a chunk removes a real piece),
    at least two radii from earlier chunks. Blob centres are random background voxels at 0.5-1 blob radius
    from the nearest segment voxel, so a blob touches the anatomy like a real false positive.
    """
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing, dtype=np.float64)
    out = np.array(labelmap, dtype=np.uint8, copy=True)
    probs = np.array(probabilities, dtype=np.float32, copy=True)
    regions: list[dict] = []
    centres: list[np.ndarray] = []
    for n in range(chunks):
        value = int(values[n % len(values)])
        mask = out == value
        if not mask.any():
            continue
        reach = max(1, int(round(chunk_radius_mm / float(spacing.min()))))
        density = ndimage.uniform_filter(mask.astype(np.float32), size=2 * reach + 1)
        candidates = np.argwhere(mask & (density >= np.median(density[mask])))
        candidates = [c for c in candidates[rng.permutation(len(candidates))[:2000]]
                      if all(np.linalg.norm((c - p) * spacing) >= 2 * chunk_radius_mm for p in centres)]
        if not candidates:
            continue
        centre = candidates[0]
        region = _ball_mask(out.shape, centre, chunk_radius_mm, spacing) & mask
        moved = 0.9 * probs[value][region]
        probs[value][region] -= moved
        probs[BACKGROUND][region] += moved
        out[region] = BACKGROUND
        centres.append(centre)
        regions.append({"kind": "missing chunk", "value": value, "centre_ijk": centre.tolist(),
                        "voxels": int(region.sum())})
    foreground = np.isin(out, values) | np.isin(labelmap, values)
    distance = ndimage.distance_transform_edt(~foreground, sampling=spacing)
    for _ in range(blobs):
        value = int(values[int(rng.integers(len(values)))])
        allowed = (distance >= 0.5 * blob_radius_mm) & (distance <= blob_radius_mm) & (out == BACKGROUND)
        for centre in centres:
            allowed &= ~_ball_mask(out.shape, centre, 2 * max(chunk_radius_mm, blob_radius_mm), spacing)
        candidates = np.argwhere(allowed)
        if not len(candidates):
            continue
        centre = candidates[int(rng.integers(len(candidates)))]
        region = _ball_mask(out.shape, centre, blob_radius_mm, spacing) & (out == BACKGROUND)
        onehot = np.zeros((probs.shape[0], 1), np.float32)
        onehot[value] = 1.0
        probs[:, region] = 0.2 * probs[:, region] + 0.8 * onehot
        out[region] = value
        centres.append(centre)
        regions.append({"kind": "false blob", "value": value, "centre_ijk": centre.tolist(),
                        "voxels": int(region.sum())})
    return SyntheticErrors(out, probs, regions)


def _ball_mask(shape, centre, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=False))
    return distance2 <= radius_mm ** 2
