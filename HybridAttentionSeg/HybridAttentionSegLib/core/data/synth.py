"""Synthetic brain subjects from the MNI152 tissue maps: SynthSeg-style domain randomisation (numpy/scipy/torch).

In the spirit of SynthSeg (Billot et al., Medical Image Analysis 86, 2023): every subject is drawn from the
template's tissue maps, not from its image, so a model trained on them cannot lean on the template's own
contrast, resolution or background. Public API (the ``demo`` dataset of the experiments, split by seed)::

    from HybridAttentionSegLib.core.data.synth import SyntheticSubjects, TRAINING_SEEDS, VALIDATION_SEEDS

    train = SyntheticSubjects(TRAINING_SEEDS, region="train")   # the held-out slab is never drawn
    image, labels, affine = train.subject(123)
    # image: core Volume (1, I, J, K) float32 on the template grid (affine = template's, RAS, 2 mm)
    # labels: (I, J, K) uint8, 0 background (and CSF), 1 grey matter, 2 white matter
    # image.meta["synthetic"]: every random choice made for this subject (JSON-serialisable)
    for image, labels, affine in SyntheticSubjects(VALIDATION_SEEDS[:20]):   # held-out subjects, whole brain
        ...

* ``seeds``: the generator seeds this object may draw (a ``range`` or any sequence of ints); ``subject`` refuses
  any other seed, so a training split can never draw a validation seed. ``TRAINING_SEEDS`` and
  ``VALIDATION_SEEDS`` are disjoint; the bundled models were trained on the first and validated on the second.
* ``region``: ``"all"`` (whole brain) or ``"train"`` (the tissue maps are cut to background at and above the
  held-out slab, RAS z >= 44 mm, *before* warping: no voxel of the slab's anatomy reaches a training subject).
* ``contrast``: ``"t1"`` (tissue means ordered CSF < grey < white, as in T1-weighted MRI) or ``"any"``
  (independent uniform means: contrast-agnostic, as in SynthSeg).
* ``resolution``: grid of the output and of the source maps, 2 (default) or 1 mm.
* ``background``: ``None`` (random, see below) or one of ``BACKGROUNDS`` to force it; the same seed with another
  background gives the same subject with only the voxels outside the brain changed.

A subject, in this order (ranges in :class:`Ranges`; all draws from ``numpy.random.default_rng(seed)``, so a
seed gives the same subject on every machine, up to float rounding of the torch/scipy kernels):

1. **Geometry**: a random affine about the brain's centre (rotation up to +-15 deg about each axis, scale
   +-15 % per axis, translation up to 8 mm) composed with a smooth random deformation (Gaussian control
   points every 24 mm, displacement std up to 3 mm, trilinearly upsampled). The brain mask (template > 0.2)
   and the grey/white probability maps are warped together (trilinear); the labels are then derived exactly as
   :func:`.mni.tissue_labels` derives them from the unwarped maps (brain mask >= 0.5, argmax of
   ``(1 - gm - wm, gm, wm)``), so an identity draw reproduces the template's labels.
2. **Tissue intensities**: with ``contrast="t1"`` white 1, grey 0.55-0.85, CSF 0.15-0.75 x grey; with
   ``"any"`` each uniform in 0-1. Partial-volume mixture ``mask * (csf * mu_csf + gm * mu_gm + wm * mu_wm)`` (CSF
   fraction ``1 - gm - wm``), each mean modulated by its own smooth field (std up to 8 %: deep grey matter
   is not cortex).
3. **Resolution**: an acquisition voxel size per axis, isotropic 1-3 mm or anisotropic (in-plane 1-1.5 mm,
   slices 1.5-3 mm along a random axis); Gaussian point-spread blur with FWHM = voxel size.
4. **Bias field** (smooth, log-std up to 0.3), **gamma** (log-normal, std 0.25, clipped to 0.6-1.7), then
   the image is sampled on the acquisition grid, gets **Rician noise** (std up to 5 % of the brightest
   tissue) and goes back to the output grid (trilinear: the partial-volume blur of thick slices).
5. **Skull-stripping and background**: voxels outside the warped mask are replaced by a background that is
   exact zero (p 0.5), near zero (uniform up to 2e-17, what resampling leaves; p 0.25) or Rayleigh noise
   (0.5-3 % of the brightest tissue; p 0.25); the whole image is scaled by 10**U(0, 3) before that.

Measured per subject on one thread of the project's 2-core CPU: see ``Resources/docs/demo-data.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from ..inference.volume import Volume
from . import mni

logger = logging.getLogger(__name__)

#: generator seeds of training subjects
TRAINING_SEEDS = range(0, 1_000_000)
#: generator seeds of held-out validation subjects (never drawn by training)
VALIDATION_SEEDS = range(1_000_000, 1_001_000)
REGIONS = ("all", "train")
CONTRASTS = ("t1", "any")
BACKGROUNDS = ("zero", "near-zero", "noise")


@dataclass(frozen=True)
class Ranges:
    """Ranges of the random draws (defaults: the bundled models' training distribution)."""

    rotation_deg: float = 15.0
    scale: float = 0.15
    translation_mm: float = 8.0
    deform_mm: float = 3.0
    deform_spacing_mm: float = 24.0
    texture: float = 0.08
    texture_spacing_mm: float = 32.0
    bias: float = 0.3
    bias_spacing_mm: float = 48.0
    gamma: float = 0.25
    noise: float = 0.05
    resolution_mm: tuple[float, float] = (1.0, 3.0)
    p_anisotropic: float = 0.6
    background_p: tuple[float, float, float] = (0.5, 0.25, 0.25)
    near_zero: float = 2e-17
    background_noise: tuple[float, float] = (0.005, 0.03)
    log10_scale: tuple[float, float] = (0.0, 3.0)


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, channels: int, shape, spacing_mm: float, voxel_mm: float,
                  std: float) -> torch.Tensor:
    """(channels, *shape) float32: Gaussian control points every ``spacing_mm``, trilinearly upsampled."""
    coarse = [max(2, math.ceil(s * voxel_mm / spacing_mm) + 1) for s in shape]
    points = rng.normal(0.0, std, (1, channels, *coarse)).astype(np.float32)
    return F.interpolate(torch.from_numpy(points), size=tuple(shape), mode="trilinear", align_corners=True)[0]


@lru_cache(maxsize=4)
def _source_maps(resolution: int, region: str) -> tuple[torch.Tensor, np.ndarray]:
    """(1, 3, I, J, K) float32 (brain mask, grey, white) and the brain's centre of mass in voxels."""
    mask = mni.brain_mask(resolution).astype(np.float32)
    gm, wm = mni.tissue_probabilities(resolution)
    maps = np.stack([mask, gm * mask, wm * mask])
    if region == "train":
        maps[:, :, :, mni.heldout_first_slice(resolution):] = 0.0
    centre = np.argwhere(maps[0] > 0).mean(axis=0)
    return torch.from_numpy(np.ascontiguousarray(maps))[None], centre


class SyntheticSubjects:
    """Seeded synthetic T1-like subjects with exact tissue labels (see the module docstring for the API).

    Args:
        seeds: generator seeds this object may draw (iteration order = this order).
        region: "all" or "train" (tissue maps cut at the held-out slab before warping).
        contrast: "t1" (ordered tissue means) or "any" (contrast-agnostic).
        resolution: template grid in mm (2 or 1).
        background: force one of ``BACKGROUNDS`` (default: random per subject).
        ranges: the random ranges (default :class:`Ranges`).
    """

    def __init__(self, seeds=VALIDATION_SEEDS, region: str = "all", contrast: str = "t1", resolution: int = 2,
                 background: str | None = None, ranges: Ranges | None = None):
        if region not in REGIONS:
            raise ValueError(f"region {region!r} is unknown; use one of {REGIONS}")
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast {contrast!r} is unknown; use one of {CONTRASTS}")
        if background is not None and background not in BACKGROUNDS:
            raise ValueError(f"background {background!r} is unknown; use None or one of {BACKGROUNDS}")
        self.seeds = seeds
        self.region, self.contrast, self.background = region, contrast, background
        self.resolution = int(resolution)
        self.ranges = ranges or Ranges()
        self.template = mni.load_template(self.resolution)
        self.shape = self.template.shape
        self.affine = self.template.affine.copy()

    def __len__(self) -> int:
        return len(self.seeds)

    def __iter__(self):
        for seed in self.seeds:
            yield self.subject(seed)

    def subject(self, seed: int, background: str | None = None) -> tuple[Volume, np.ndarray, np.ndarray]:
        """Subject ``seed``: ``(image Volume (1, I, J, K) float32, labels (I, J, K) uint8, affine 4x4)``.

        ``background`` overrides the object's background choice for this call (same subject otherwise).
        """
        if int(seed) != seed or int(seed) not in self.seeds:
            raise ValueError(f"seed {seed!r} is not one of this generator's seeds ({self.seeds!r})")
        seed = int(seed)
        rng = np.random.default_rng(seed)
        params: dict = {"seed": seed, "region": self.region, "contrast": self.contrast,
                        "resolution_mm": self.resolution}
        maps, centre = _source_maps(self.resolution, self.region)
        with torch.no_grad():
            grid = self._sampling_grid(rng, centre, params)
            warped = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
            labels, brain = _labels(warped)
            image = self._image(rng, warped, brain, params)
        forced = background or self.background
        image = self._background(rng, image, brain, forced, params)
        meta = {"source": "core.data.synth.SyntheticSubjects", "synthetic": params}
        volume = Volume(image[None], self.affine.copy(), f"synthetic subject {seed}", meta)
        return volume, labels, self.affine.copy()

    def _sampling_grid(self, rng: np.random.Generator, centre: np.ndarray, params: dict) -> torch.Tensor:
        r = self.ranges
        angles = rng.uniform(-1, 1, 3) * math.radians(r.rotation_deg)
        scales = 1.0 + rng.uniform(-1, 1, 3) * r.scale
        shift = rng.uniform(-1, 1, 3) * r.translation_mm / self.resolution
        deform_std = rng.uniform(0, r.deform_mm) / self.resolution
        params.update(rotation_deg=[round(math.degrees(a), 3) for a in angles], scale=scales.round(4).tolist(),
                      translation_mm=(shift * self.resolution).round(3).tolist(),
                      deformation_std_mm=round(deform_std * self.resolution, 3))
        # output voxel -> source voxel: M (x - c) + c + t + d(x)
        matrix = torch.from_numpy((_rotation(angles) @ np.diag(scales)).astype(np.float32))
        axes = [torch.arange(n, dtype=torch.float32) - float(c) for n, c in zip(self.shape, centre, strict=True)]
        points = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, I, J, K), centred
        source = torch.einsum("ab,bijk->aijk", matrix, points)
        offset = torch.from_numpy((centre + shift).astype(np.float32)).view(3, 1, 1, 1)
        source += offset
        source += _smooth_field(rng, 3, self.shape, r.deform_spacing_mm, self.resolution, deform_std)
        # grid_sample wants (x, y, z) = (K, J, I) in [-1, 1] (align_corners: -1 and 1 are the end voxel centres)
        normalised = [source[a] * (2.0 / (n - 1)) - 1.0 for a, n in enumerate(self.shape)]
        return torch.stack(normalised[::-1], dim=-1)[None]

    def _means(self, rng: np.random.Generator) -> np.ndarray:
        if self.contrast == "t1":
            grey = rng.uniform(0.55, 0.85)
            return np.array([grey * rng.uniform(0.15, 0.75), grey, 1.0])
        return rng.uniform(0.0, 1.0, 3)

    def _image(self, rng: np.random.Generator, warped: torch.Tensor, brain: np.ndarray, params: dict) -> np.ndarray:
        r, voxel = self.ranges, float(self.resolution)
        mask, grey, white = warped
        csf = (1.0 - grey - white).clamp_(min=0.0)
        means = self._means(rng)
        texture = _smooth_field(rng, 3, self.shape, r.texture_spacing_mm, voxel, rng.uniform(0, r.texture))
        fractions = torch.stack([csf, grey, white])
        tissue = (fractions * torch.from_numpy(means.astype(np.float32)).view(3, 1, 1, 1) * texture.exp_())
        image = (mask * tissue.sum(0)).numpy()
        # acquisition grid and point-spread function (FWHM = voxel size)
        low, high = r.resolution_mm
        if rng.uniform() < r.p_anisotropic:
            acquired = np.full(3, rng.uniform(low, (low + high) / 2 - 0.5))
            acquired[int(rng.integers(3))] = rng.uniform((low + high) / 2 - 0.5, high)
        else:
            acquired = np.full(3, rng.uniform(low, high))
        sigma = acquired / voxel / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        image = gaussian_filter(image, sigma, mode="constant", truncate=3.0)
        bias = _smooth_field(rng, 1, self.shape, r.bias_spacing_mm, voxel, rng.uniform(0, r.bias))[0].exp_()
        image = torch.from_numpy(image) * bias
        gamma = float(np.clip(math.exp(rng.normal(0.0, r.gamma)), 0.6, 1.7))
        peak = float(image.max()) or 1.0
        image = (image.clamp_(min=0.0) / peak) ** gamma
        acquisition_shape = tuple(max(8, round(n * voxel / a)) if a > voxel else n
                                  for n, a in zip(self.shape, acquired, strict=True))
        if acquisition_shape != self.shape:
            image = F.interpolate(image[None, None], size=acquisition_shape, mode="trilinear",
                                  align_corners=True)[0, 0]
        noise = rng.uniform(0, r.noise)
        real = torch.from_numpy(rng.normal(0.0, noise, image.shape).astype(np.float32))
        imaginary = torch.from_numpy(rng.normal(0.0, noise, image.shape).astype(np.float32))
        image = ((image + real) ** 2 + imaginary**2).sqrt_()
        if acquisition_shape != self.shape:
            image = F.interpolate(image[None, None], size=self.shape, mode="trilinear", align_corners=True)[0, 0]
        params.update(tissue_means={"csf": round(float(means[0]), 4), "grey": round(float(means[1]), 4),
                                    "white": round(float(means[2]), 4)},
                      acquisition_mm=acquired.round(3).tolist(), gamma=round(gamma, 4), noise=round(noise, 4))
        return image.numpy()

    def _background(self, rng: np.random.Generator, image: np.ndarray, brain: np.ndarray, forced: str | None,
                    params: dict) -> np.ndarray:
        r = self.ranges
        scale = 10.0 ** rng.uniform(*r.log10_scale)
        drawn = BACKGROUNDS[int(rng.choice(len(BACKGROUNDS), p=r.background_p))]
        level = rng.uniform(*r.background_noise)
        # the background's random values come from their own stream: forcing another background changes
        # nothing else in the subject
        background_rng = np.random.default_rng([int(params["seed"]), 1])
        kind = forced or drawn
        outside = ~brain
        out = image.astype(np.float32) * np.float32(scale)
        if kind == "zero":
            out[outside] = 0.0
        elif kind == "near-zero":
            out[outside] = background_rng.uniform(0.0, r.near_zero, int(outside.sum())).astype(np.float32)
        else:
            n = int(outside.sum())
            rayleigh = np.hypot(background_rng.normal(0, 1, n), background_rng.normal(0, 1, n))
            out[outside] = (rayleigh * level * scale).astype(np.float32)
        params.update(intensity_scale=round(scale, 4), background=kind)
        return out


def _labels(warped: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Labels and brain mask from warped (mask, grey, white), by the rule of :func:`.mni.tissue_labels`."""
    mask, grey, white = (t.numpy() for t in warped)
    brain = mask >= 0.5
    other = 1.0 - grey - white
    # argmax of (other, grey, white) with ties to the first, as np.argmax (comparisons: 10x faster here)
    labels = np.where(white > np.maximum(other, grey), mni.WHITE_MATTER, mni.BACKGROUND).astype(np.uint8)
    labels[(grey > other) & (grey >= white)] = mni.GREY_MATTER
    labels[~brain] = mni.BACKGROUND
    return labels, brain


def ranges_dict(ranges: Ranges | None = None) -> dict:
    """The ranges as a JSON-serialisable dict (recorded in model cards)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ranges or Ranges()).items()}
