"""What an explanation is evaluated on: an input volume, the region that is perturbed and scored, a reference.

* :func:`heldout_case` (default for the bundled demo models): the MNI152 2 mm template, cropped around the
  **held-out slab** (RAS z >= 44 mm, never seen in training; ``core.data.mni``). The region is the brain
  inside that slab; the input is cropped to the sliding windows of a whole-volume run that touch the slab
  (:func:`crop_bounds`), so the model computes exactly what it computes on the whole template there, at a
  fraction of the cost. The reference is the template's tissue labelmap. ``single_window`` (both protocols'
  default, see :mod:`.protocol`) keeps the one window of that grid holding most of the slab.
* :func:`input_case`: a user's volume; the region is the body (see :mod:`..masking`), the reference is the
  model's own prediction.

Both normalise the intensities **once, on the whole volume**, with the card's rule, before cropping, and the
evaluation then runs the model with intensity normalisation switched off (:func:`evaluation_card`). So the
crop sees exactly the values the full pipeline gives the whole volume (z-score statistics of a crop differ),
and perturbations act on what the network sees, not on values the normalisation would re-estimate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ...inference.preprocess import normalise_intensity
from ...inference.volume import Volume
from ...models.cards import ModelCard
from ..masking import body_mask


@dataclass
class EvalCase:
    """One evaluation input.

    Attributes:
        volume: the input the model sees (possibly a crop).
        region: bool (I, J, K): voxels that are ranked, perturbed and scored.
        reference: uint8 (I, J, K) reference labelmap for localisation, or None (use the prediction).
        description: one line for reports ("which data").
    """

    volume: Volume
    region: np.ndarray
    reference: np.ndarray | None
    description: str


WHOLE_RUN_WINDOWS = "the whole-volume sliding windows that touch the slab"


def evaluation_card(card: ModelCard) -> ModelCard:
    """The card with intensity normalisation off (cases are normalised already); same weights and id."""
    data = copy.deepcopy(card.data)
    data["preprocessing"]["intensity"] = {"method": "none"}
    return ModelCard(data, card.path)


def _normalised(volume: Volume, card: ModelCard) -> Volume:
    data, _ = normalise_intensity(volume.data, card.intensity)
    return Volume(data, volume.affine, name=volume.name, meta=dict(volume.meta))


def _crop(volume: Volume, starts, stops) -> Volume:
    slices = tuple(slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = [int(a) for a in starts]
    data = np.ascontiguousarray(volume.data[(slice(None), *slices)])
    return Volume(data, volume.affine @ shift, name=f"{volume.name} (crop)", meta=dict(volume.meta))


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of MONAI's sliding windows along one axis (``_get_scan_interval``/``dense_patch_slices``)."""
    if size <= roi:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    starts, index = [], 0
    while True:
        start = min(index * interval, size - roi)
        starts.append(start)
        if start + roi >= size:
            return starts
        index += 1


def crop_bounds(region: np.ndarray, roi, overlap: float, single_window: bool) -> tuple[list, list]:
    """A crop made of whole sliding windows of the whole-volume run.

    Default: every window of the whole-volume run that touches ``region``; the sliding windows of the crop
    are then exactly those windows, so every region voxel gets the same windows and the same Gaussian
    blending as in a whole-volume run (position-dependent models such as TransUNet give the same output).
    ``single_window``: the one window of that grid holding most region voxels (quick mode).
    """
    shape = region.shape
    idx = np.argwhere(region)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    starts, stops = [], []
    for axis in range(3):
        size, r = shape[axis], min(int(roi[axis]), shape[axis])
        touching = [s for s in window_starts(size, r, overlap) if s < hi[axis] and s + r > lo[axis]]
        if single_window:
            profile = region.sum(axis=tuple(a for a in range(3) if a != axis))
            best = max(touching, key=lambda s: (int(profile[s:s + r].sum()), -s))
            touching = [best]
        starts.append(int(touching[0]))
        stops.append(int(touching[-1]) + r)
    return starts, stops


def heldout_case(card: ModelCard, single_window: bool = False) -> EvalCase:
    """The held-out slab of the MNI152 2 mm template (needs nilearn, the ``demo`` extra)."""
    from ...data import mni

    volume = _normalised(mni.load_template(2), card)
    shape = volume.shape
    region = mni.brain_mask(2) & mni.heldout_mask(shape, 2)
    starts, stops = crop_bounds(region, card.roi_size, card.overlap, single_window)
    cropped = _crop(volume, starts, stops)
    sl = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
    description = (f"MNI152 2009 T1 template (nilearn, 2 mm), held-out slab RAS z >= {mni.HELDOUT_Z_MIN_MM:g} mm: "
                   f"{int(region[sl].sum())} brain voxels perturbed and scored; input cropped to voxels "
                   f"{starts}..{stops} ({'one sliding window' if single_window else WHOLE_RUN_WINDOWS})")
    return EvalCase(cropped, np.ascontiguousarray(region[sl]), mni.tissue_labels(2)[sl].copy(), description)


def input_case(volume: Volume, card) -> EvalCase:
    """A user's volume: region = the body mask of the input (the whole volume if the card has no rule)."""
    region = body_mask(volume.data, card.intensity)
    volume = _normalised(volume, card)
    description = f"{volume.name}: {int(region.sum())} body voxels perturbed and scored (whole input)"
    return EvalCase(volume, region, None, description)
