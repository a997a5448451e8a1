"""Correcting a segmentation after inference: per-segment thresholds and model-agnostic clicks.

Everything here works on the result files of any catalog model: the image, the labelmap and the per-class
probabilities (channel ``c`` = label value ``c``, channel 0 = background), all on the input grid.

**Threshold** (:func:`threshold_segment`): segment ``v`` is re-derived as ``probability[v] >= t`` on the
voxels it may own (background and its own voxels); other segments are never touched and voxels that leave
``v`` become background. The set of voxels ``v`` may own does not change, so the result depends only on the
last threshold (moving a slider up and back down restores the mask exactly).

**Clicks** (:func:`apply_clicks`): a click says "this voxel belongs to segment ``v``" (``v > 0``) or "to the
background" (``v = 0``). A click changes one connected region (6-connected) around it, inside a ball of
``radius_mm``, and only voxels that currently carry the label found under the click:

* a **segment click** turns that label into ``v`` where the intensity is within ``tolerance`` robust standard
  deviations of class ``v``'s typical intensity near the click, is more typical of ``v`` than of any other
  segment (each measured in its own spread), and the model gives ``v`` at least ``min_probability`` (the click
  overrides the model except where it is near-certain);
* a **background click** removes the voxels of the label under it that look like the clicked point (closer in
  intensity to it than to that label's typical intensity) and where the model is not clearly surer of that
  label than at the click: a false blob goes, the true structure it touches stays.

The clicked voxel itself always takes the clicked label. A later click never changes voxels that an earlier
click with a different label set (except its own clicked voxel), so nearby clicks cannot undo each other.
Clicks are replayed in order on the labelmap they are given, with intensity statistics taken once from it, so
the same clicks always give the same result; removing a click and replaying takes its effect back. The region
growing is hand-written (scipy.ndimage connected components) because no library offers this
probability-plus-intensity rule restricted to a ball around a seed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import UserInputError
from ..inference.volume import ras_to_ijk

logger = logging.getLogger(__name__)

BACKGROUND = 0
#: most clicks one replay accepts (voxel ownership is stored as uint16)
MAX_CLICKS = 65535
#: most voxels used to estimate one class's intensity statistics (a regular subsample above this)
_STATS_SAMPLE = 2_000_000


# ------------------------------------------------------------------------------------------------- threshold
def threshold_segment(labelmap: np.ndarray, probabilities: np.ndarray, value: int,
                      threshold: float) -> np.ndarray:
    """Re-derive segment ``value`` as ``probability >= threshold``; other segments unchanged.

    Vectorised, O(voxels) with four passes over uint8/float32 arrays (about 20 ms for 256^3 on one core; see
    ``Testing/benchmarks/threshold_speed.py``).

    Args:
        labelmap: (I, J, K) integer labelmap.
        probabilities: (C, I, J, K) per-class probabilities (channel = label value), or the (I, J, K)
            probability of this segment alone (cheaper: no channel lookup).
        value: label value of the segment (1..255).
        threshold: probability threshold in [0, 1].

    Returns:
        A new uint8 labelmap.
    """
    value = int(value)
    if not 1 <= value <= 255:
        message = f"segment label value {value} is out of range; use a label value between 1 and 255"
        raise UserInputError(message)
    probability = _segment_probability(probabilities, value, np.shape(labelmap))
    labelmap = np.asarray(labelmap)
    out = np.greater_equal(probability, np.float32(threshold)).view(np.uint8)
    out *= np.uint8(value)
    other = labelmap != value
    other &= labelmap != BACKGROUND
    np.copyto(out, labelmap, where=other, casting="unsafe")
    return out


def _segment_probability(probabilities: np.ndarray, value: int, shape) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 3:
        probability = probabilities
    elif probabilities.ndim == 4:
        if value >= probabilities.shape[0]:
            message = (f"the probability map has {probabilities.shape[0]} channels, so it has no channel for "
                       f"label value {value}; give the probabilities written with this segmentation")
            raise UserInputError(message)
        probability = probabilities[value]
    else:
        message = f"probabilities should be (C, I, J, K) or (I, J, K), got shape {probabilities.shape}"
        raise UserInputError(message)
    if probability.shape != tuple(shape):
        message = (f"probability grid {probability.shape} differs from the segmentation grid {tuple(shape)}; "
                   "give the probabilities written with this segmentation")
        raise UserInputError(message)
    return probability


# ------------------------------------------------------------------------------------------------- clicks
@dataclass(frozen=True)
class Click:
    """One click: voxel index (i, j, k) and the label value it belongs to (0 = background)."""

    ijk: tuple[int, int, int]
    value: int


def click_from_ras(affine: np.ndarray, ras: Sequence[float], value: int, shape) -> Click:
    """The :class:`Click` at RAS millimetres ``ras`` on the grid (``affine``, ``shape``): nearest voxel.

    Raises:
        UserInputError: the point lies outside the grid.
    """
    ijk = np.rint(ras_to_ijk(affine, np.asarray(ras, dtype=np.float64))[0]).astype(int)
    if any(not 0 <= c < s for c, s in zip(ijk, shape, strict=False)):
        point = ", ".join(f"{float(x):g}" for x in ras)
        message = (f"click at RAS ({point}) mm falls outside the image (voxel {tuple(ijk.tolist())}, grid "
                   f"{tuple(shape)}); give RAS millimetres inside the image")
        raise UserInputError(message)
    return Click(tuple(int(c) for c in ijk), int(value))


@dataclass
class ClassIntensity:
    """Robust intensity statistics of one label: median and standard deviation (1.4826 x MAD)."""

    median: float
    sigma: float


def class_intensities(image: np.ndarray, labelmap: np.ndarray,
                      values: Iterable[int]) -> dict[int, ClassIntensity]:
    """Median and robust spread of ``image`` inside each label of ``labelmap`` (labels with >= 20 voxels).

    The spread has a floor of 1% of the image's 1-99 percentile range, so a constant class still has a
    usable tolerance.
    """
    image = np.asarray(image)
    # a regular subsample along every axis (no full copy, also for transposed views)
    step = max(1, int(np.ceil((image.size / _STATS_SAMPLE) ** (1 / 3))))
    flat_image = np.ascontiguousarray(image[::step, ::step, ::step]).ravel()
    flat_labels = np.ascontiguousarray(np.asarray(labelmap)[::step, ::step, ::step]).ravel()
    low, high = np.percentile(flat_image, [1, 99]) if flat_image.size else (0.0, 1.0)
    floor = max(float(high - low) * 0.01, 1e-6)
    stats = {}
    for value in values:
        samples = flat_image[flat_labels == value]
        if samples.size < 20:
            continue
        median = float(np.median(samples))
        sigma = 1.4826 * float(np.median(np.abs(samples - median)))
        stats[int(value)] = ClassIntensity(median, max(sigma, floor))
    return stats


def apply_clicks(image: np.ndarray, labelmap: np.ndarray, probabilities: np.ndarray | None,
                 clicks: Sequence[Click | tuple], spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 radius_mm: float = 20.0, tolerance: float = 2.5, min_probability: float = 0.01,
                 report: list | None = None) -> np.ndarray:
    """Replay ``clicks`` in order on a copy of ``labelmap`` (rules in the module docstring).

    Args:
        image: (I, J, K) intensities (the first channel of a multi-channel input).
        labelmap: (I, J, K) labelmap before any of these clicks (the model's output, or the state the clicks
            started from). Not modified.
        probabilities: (C, I, J, K) probabilities (channel = label value), or a sequence of C (I, J, K)
            arrays (views, no copy), or None (no probability rule).
        clicks: :class:`Click` or ``((i, j, k), value)`` pairs; value 0 = background.
        spacing: voxel size in mm along I, J, K (for the ball).
        radius_mm: radius of the ball a click may change.
        tolerance: intensity tolerance in robust standard deviations of the clicked class.
        min_probability: a segment click never adds voxels where the model gives that class less than this.
        report: if a list, one dict per click is appended: ``{"ijk", "value", "changed", "previous"}``.

    Returns:
        The corrected uint8 labelmap.
    """
    image = np.asarray(image)
    out = np.array(labelmap, dtype=np.uint8, copy=True)
    if image.shape != out.shape:
        message = f"image grid {image.shape} differs from the segmentation grid {out.shape}; resample first"
        raise UserInputError(message)
    if probabilities is not None and np.shape(probabilities[0]) != out.shape:
        message = (f"probability grid {np.shape(probabilities[0])} differs from the segmentation grid "
                   f"{out.shape}; give the probabilities written with this segmentation")
        raise UserInputError(message)
    clicks = [c if isinstance(c, Click) else Click(tuple(int(x) for x in c[0]), int(c[1])) for c in clicks]
    if len(clicks) > MAX_CLICKS:
        message = f"{len(clicks)} clicks given; at most {MAX_CLICKS} are supported, undo or remove some"
        raise UserInputError(message)
    for click in clicks:
        _check_click(click, out.shape, probabilities)
    if not clicks:
        return out
    present = np.flatnonzero(np.bincount(out.ravel(order="K"), minlength=256)).tolist()
    stats = class_intensities(image, out, set(present) | {c.value for c in clicks})
    rule = _Rule(np.asarray(spacing, dtype=np.float64), float(radius_mm), float(tolerance),
                 float(min_probability))
    owner = np.zeros(out.shape, dtype=np.uint16)  # 1 + index of the click that last set each voxel
    for n, click in enumerate(clicks):
        previous = int(out[click.ijk])
        changed = _apply_one(image, out, probabilities, owner, n, clicks, stats, rule)
        logger.debug("click %s -> %d: %d voxels changed", click.ijk, click.value, changed)
        if report is not None:
            report.append({"ijk": list(click.ijk), "value": click.value, "changed": changed,
                           "previous": previous})
    return out


@dataclass(frozen=True)
class _Rule:
    spacing: np.ndarray
    radius_mm: float
    tolerance: float
    min_probability: float
    probability_margin: float = 0.1


def _check_click(click: Click, shape, probabilities) -> None:
    if len(click.ijk) != 3 or any(not 0 <= c < s for c, s in zip(click.ijk, shape, strict=False)):
        message = (f"click at voxel {click.ijk} is outside the volume {tuple(shape)}; "
                   "place it inside the image")
        raise UserInputError(message)
    if not 0 <= click.value <= 255:
        message = f"click label value {click.value} is out of range; use 0 (background) or a segment value"
        raise UserInputError(message)
    if probabilities is not None and click.value >= len(probabilities):
        message = (f"click label value {click.value} has no probability channel "
                   f"({len(probabilities)} channels); click a segment of this model")
        raise UserInputError(message)


def _ball(centre: tuple[int, int, int], shape, rule: _Rule) -> tuple[tuple[slice, ...], np.ndarray, tuple]:
    """Bounding box slices of the ball, the ball mask inside the box, and the centre in box coordinates."""
    reach = np.floor(rule.radius_mm / rule.spacing).astype(int)
    lo = [max(0, c - r) for c, r in zip(centre, reach, strict=False)]
    hi = [min(s, c + r + 1) for c, r, s in zip(centre, reach, shape, strict=False)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=False))
    grids = np.ogrid[tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, centre, strict=False))]
    distance2 = sum((g * s) ** 2 for g, s in zip(grids, rule.spacing, strict=False))
    local = tuple(c - a for c, a in zip(centre, lo, strict=False))
    return box, distance2 <= rule.radius_mm ** 2, local


def _seed_intensity(intensity: np.ndarray, local: tuple, spread: float) -> float:
    """Intensity at the click, denoised: median of the 3x3x3 neighbours within one spread of the voxel.

    Neighbours across an edge (further than ``spread`` from the clicked voxel) do not pull the estimate.
    """
    window = tuple(slice(max(0, c - 1), c + 2) for c in local)
    samples = intensity[window]
    samples = samples[np.abs(samples - intensity[local]) <= spread]
    return float(np.median(samples)) if samples.size else float(intensity[local])


def _class_centre(intensity, labels, ball, value: int, stats: dict[int, ClassIntensity], local: tuple,
                  spread: float) -> float:
    """Typical intensity of class ``value`` near the click: median of its voxels in the ball (>= 50 of them),
    else over the whole image, else (a class not segmented anywhere) the intensity at the click."""
    near = intensity[ball & (labels == value)]
    if near.size >= 50:
        return float(np.median(near))
    if value in stats:
        return stats[value].median
    return _seed_intensity(intensity, local, spread)


def _apply_one(image, out, probabilities, owner: np.ndarray, index: int, clicks: Sequence[Click],
               stats: dict[int, ClassIntensity], rule: _Rule) -> int:
    """Apply ``clicks[index]`` to ``out`` (and ``owner``) in place; return the number of voxels changed."""
    click = clicks[index]
    box, ball, local = _ball(click.ijk, out.shape, rule)
    ball &= ~_protected(owner[box], index, clicks)
    labels = out[box]  # views: edits land in ``out`` and ``owner``
    current = int(labels[local])
    if current == click.value:
        return 0
    # only the label under the click changes: correct voxels of other labels stay
    candidates = ball & (labels == current)
    def probability(channel: int) -> np.ndarray | None:  # one channel, in the box: no (C, ...) copies
        return None if probabilities is None else np.asarray(probabilities[channel][box])

    if click.value == BACKGROUND:
        support = _false_region(image[box], candidates, probability(current), current, local, stats, rule)
    else:
        support = _missed_region(image[box], labels, ball, candidates, probability(click.value), click.value, local,
                                 stats, rule)
    support[local] = True
    components, _ = ndimage.label(support)
    region = components == components[local]
    changed = int(np.count_nonzero(labels[region] != click.value))
    labels[region] = click.value
    owner[box][region] = index + 1
    return changed


def _false_region(intensity, candidates, probability, current: int, local: tuple,
                  stats: dict[int, ClassIntensity], rule: _Rule) -> np.ndarray:
    """Voxels a background click may remove: like the clicked point, not what the model is surer of."""
    spread = stats[current].sigma if current in stats else _local_sigma(intensity, local)
    distance = np.abs(intensity - _seed_intensity(intensity, local, spread))
    support = candidates & (distance <= rule.tolerance * spread)
    if current in stats:  # more like the clicked point than like a typical voxel of that label
        support &= distance <= np.abs(intensity - stats[current].median)
    if probability is not None:  # keep what the model is clearly surer of than at the click
        support &= probability <= probability[local] + rule.probability_margin
    return support


def _missed_region(intensity, labels, ball, candidates, probability, value: int, local: tuple,
                   stats: dict[int, ClassIntensity], rule: _Rule) -> np.ndarray:
    """Voxels a segment click may add: typical of the class, more than of any other segment, not excluded
    by the model."""
    spread = stats[value].sigma if value in stats else _local_sigma(intensity, local)
    centre = _class_centre(intensity, labels, ball, value, stats, local, spread)
    distance = np.abs(intensity - centre) / spread
    support = candidates & (distance <= rule.tolerance)
    for other_value, other in stats.items():
        if other_value not in (BACKGROUND, value):
            support &= distance <= np.abs(intensity - other.median) / other.sigma
    if probability is not None:
        support &= probability >= rule.min_probability
    return support


def _local_sigma(intensity: np.ndarray, local: tuple) -> float:
    """Robust spread of the 5x5x5 neighbourhood (for a class with too few voxels for global statistics)."""
    window = tuple(slice(max(0, c - 2), c + 3) for c in local)
    samples = intensity[window].ravel()
    sigma = 1.4826 * float(np.median(np.abs(samples - np.median(samples))))
    return max(sigma, float(np.ptp(intensity)) * 0.01, 1e-6)


def _protected(owner: np.ndarray, index: int, clicks: Sequence[Click]) -> np.ndarray:
    """Voxels (of ``owner``'s box) that an earlier click with a different label set.

    A later click never takes back what an earlier, disagreeing click decided (only its own clicked voxel
    can change such a voxel): without this rule two nearby clicks can undo each other's work. To take an
    earlier click's region back, remove that click (all clicks are replayed) or undo.
    """
    value = clicks[index].value
    conflicting = np.array([False] + [c.value != value for c in clicks[:index]])
    return conflicting[owner]
