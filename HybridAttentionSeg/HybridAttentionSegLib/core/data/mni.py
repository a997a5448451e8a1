"""The MNI152 2009 T1 template (as shipped by nilearn) and a derived grey/white-matter tissue task.

Everything here is loaded offline from files inside the nilearn package (``nilearn.datasets.load_mni152_*``);
nilearn is an optional dependency (the ``demo`` extra). The exact rules, documented in ``Resources/docs/demo-data.md``:

* **Image**: ``load_mni152_template(resolution)`` (skull-stripped T1, scaled by nilearn to [0, 1]; the 2 mm
  version is nilearn's resampling of the 1 mm one). Values with ``|x| < 1e-6`` are set to exactly 0:
  nilearn's continuous-interpolation resampling leaves ~266 000 voxels of the 2 mm background at
  denormal values (< 1e-17) that would otherwise count as "nonzero" in z-score normalisation.
* **Brain mask**: ``image > 0.2`` (the default threshold of nilearn's ``load_mni152_brain_mask``).
* **Labels**: inside the brain mask, the most probable of three classes, with
  ``p_gm = load_mni152_gm_template``, ``p_wm = load_mni152_wm_template`` and ``p_other = 1 - p_gm - p_wm``
  (CSF and non-brain); ``label = argmax(p_other, p_gm, p_wm)`` (ties go to the first), i.e. 0 background,
  1 grey matter, 2 white matter. Outside the brain mask the label is 0.
* **Held-out slab**: the axial slab at RAS z >= +44 mm (superior part of the brain). The template is left-right
  symmetric, so a hemisphere split would leak; a slab does not. Voxel index k >= 58 at 2 mm, k >= 116 at 1 mm.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np

from ..errors import UserInputError
from ..inference.volume import Volume

logger = logging.getLogger(__name__)

RESOLUTIONS = (1, 2)
#: template threshold of the brain mask (nilearn's ``load_mni152_brain_mask`` default)
BRAIN_THRESHOLD = 0.2
#: |value| below this is resampling residue and set to exactly 0
ZERO_EPSILON = 1e-6
#: the held-out slab: RAS z (superior) at or above this, in mm
HELDOUT_Z_MIN_MM = 44.0
#: RAS z of voxel k = 0 in nilearn's MNI152 template (both resolutions)
TEMPLATE_ORIGIN_Z_MM = -72.0
#: template shapes (I, J, K) per resolution, as nilearn ships them
TEMPLATE_SHAPES = {1: (197, 233, 189), 2: (99, 117, 95)}

BACKGROUND, GREY_MATTER, WHITE_MATTER = 0, 1, 2

_ANATOMICAL_STRUCTURE = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}

#: model-card ``labels`` of the tissue task: names, Slicer terminology codes (DICOM CID 7153, as in Slicer's
#: SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json) and that list's recommended display colours
TISSUE_LABELS = (
    {
        "value": GREY_MATTER,
        "name": "Gray matter",
        "color": [round(200 / 255, 4), round(200 / 255, 4), round(235 / 255, 4)],
        "terminology": {
            "category": dict(_ANATOMICAL_STRUCTURE),
            "type": {"scheme": "SCT", "code": "389081007", "meaning": "Gray matter"},
        },
    },
    {
        "value": WHITE_MATTER,
        "name": "White matter",
        "color": [round(250 / 255, 4), round(250 / 255, 4), round(210 / 255, 4)],
        "terminology": {
            "category": dict(_ANATOMICAL_STRUCTURE),
            "type": {"scheme": "SCT", "code": "389080008", "meaning": "White matter"},
        },
    },
)


def _check_resolution(resolution) -> int:
    if resolution not in RESOLUTIONS:
        message = f"MNI152 template resolution {resolution!r} is not available; use 1 or 2 (mm)"
        raise UserInputError(message)
    return int(resolution)


def _datasets():
    try:
        from nilearn import datasets
    except ImportError as err:
        message = ("the MNI152 demo data needs nilearn, which is not installed; install the demo extra "
                   "(pip install 'hybridattentionseg[demo]')")
        raise UserInputError(message) from err
    return datasets


@lru_cache(maxsize=2)
def _template_arrays(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    image = _datasets().load_mni152_template(resolution=resolution)
    data = np.asarray(image.get_fdata(dtype=np.float32), dtype=np.float32)
    data[np.abs(data) < ZERO_EPSILON] = 0.0
    data.setflags(write=False)
    return data, np.asarray(image.affine, dtype=np.float64)


def load_template(resolution: int = 2) -> Volume:
    """The MNI152 2009 T1 template as a (1, I, J, K) float32 :class:`Volume` with its NIfTI affine (RAS)."""
    resolution = _check_resolution(resolution)
    data, affine = _template_arrays(resolution)
    meta = {"source": "nilearn.datasets.load_mni152_template", "resolution_mm": resolution}
    return Volume(data.copy()[None], affine.copy(), f"MNI152 T1 {resolution}mm", meta)


@lru_cache(maxsize=2)
def _probabilities(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    datasets = _datasets()
    gm = datasets.load_mni152_gm_template(resolution=resolution)
    wm = datasets.load_mni152_wm_template(resolution=resolution)
    _, affine = _template_arrays(resolution)
    for name, image in (("grey matter", gm), ("white matter", wm)):
        if not np.allclose(image.affine, affine, atol=1e-4):
            message = f"nilearn's MNI152 {name} map is not on the template grid; nilearn version unsupported"
            raise RuntimeError(message)
    return (np.asarray(gm.get_fdata(dtype=np.float32), np.float32),
            np.asarray(wm.get_fdata(dtype=np.float32), np.float32))


def tissue_probabilities(resolution: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """nilearn's grey- and white-matter probability maps (I, J, K) float32 on the template grid."""
    gm, wm = _probabilities(_check_resolution(resolution))
    return gm.copy(), wm.copy()


def brain_mask(resolution: int = 2) -> np.ndarray:
    """(I, J, K) bool: template > 0.2."""
    data, _ = _template_arrays(_check_resolution(resolution))
    return data > BRAIN_THRESHOLD


@lru_cache(maxsize=2)
def _labels(resolution: int) -> np.ndarray:
    gm, wm = _probabilities(resolution)
    other = 1.0 - gm - wm
    labels = np.argmax(np.stack([other, gm, wm]), axis=0).astype(np.uint8)
    labels[~brain_mask(resolution)] = BACKGROUND
    labels.setflags(write=False)
    return labels


def tissue_labels(resolution: int = 2) -> np.ndarray:
    """(I, J, K) uint8 labelmap: 0 background, 1 grey matter, 2 white matter (rule in the module docstring)."""
    return _labels(_check_resolution(resolution)).copy()


def heldout_first_slice(resolution: int) -> int:
    """First axial voxel index k of the held-out slab (58 at 2 mm, 116 at 1 mm)."""
    resolution = _check_resolution(resolution)
    return int(math.ceil((HELDOUT_Z_MIN_MM - TEMPLATE_ORIGIN_Z_MM) / resolution))


def heldout_mask(shape, resolution: int) -> np.ndarray:
    """(I, J, K) bool mask of the held-out validation slab: k >= :func:`heldout_first_slice`.

    Args:
        shape: spatial shape of the template grid at ``resolution`` (checked).
        resolution: 1 or 2 (mm).
    """
    resolution = _check_resolution(resolution)
    shape = tuple(int(s) for s in shape)
    if shape != TEMPLATE_SHAPES[resolution]:
        message = (f"shape {shape} is not the {resolution} mm MNI152 template grid "
                   f"{TEMPLATE_SHAPES[resolution]}; the held-out slab is defined on that grid only")
        raise ValueError(message)
    mask = np.zeros(shape, dtype=bool)
    mask[:, :, heldout_first_slice(resolution):] = True
    return mask


def training_mask(shape, resolution: int) -> np.ndarray:
    """(I, J, K) bool: the voxels training may see (everything outside the held-out slab)."""
    return ~heldout_mask(shape, resolution)


def perturbed_template(resolution: int = 2) -> Volume:
    """The template with a fixed contrast perturbation, to check models beyond the exact template.

    Inside the head (nonzero voxels): ``250 * x ** 0.8 * exp(0.15 u + 0.10 v - 0.12 w + 0.08 u w)
    + N(0, 0.02 * 250)``, with (u, v, w) the voxel position scaled to [-1, 1] along I, J, K (a smooth bias field
    of about x0.7 to x1.4 over the brain), noise from ``numpy.random.default_rng(0)``; zeros stay 0.
    """
    resolution = _check_resolution(resolution)
    data, affine = _template_arrays(resolution)
    u, v, w = np.meshgrid(*[np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in data.shape], indexing="ij")
    bias = np.exp(0.15 * u + 0.10 * v - 0.12 * w + 0.08 * u * w)
    noise = np.random.default_rng(0).normal(0.0, 0.02, data.shape).astype(np.float32)
    perturbed = np.maximum(data, 0.0) ** 0.8 * bias + noise
    perturbed = np.where(data != 0, 250.0 * perturbed, 0.0).astype(np.float32)
    meta = {"source": "core.data.mni.perturbed_template", "resolution_mm": resolution}
    return Volume(perturbed[None], affine.copy(), f"MNI152 T1 {resolution}mm (perturbed)", meta)
