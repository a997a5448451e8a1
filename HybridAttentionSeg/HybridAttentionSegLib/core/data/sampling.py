"""Training batches for the MNI152 tissue task: patches from the training region only, with augmentation.

Every random choice comes from generators seeded by the caller (a ``numpy.random.Generator`` for the patch
positions, ``set_random_state`` for every MONAI transform), so a run is reproducible for a given seed.

Augmentation, chosen so that models also work on T1 images other than the template:

* whole volume, once per step, in the raw [0, 1] intensity domain (before normalisation, like a scanner
  would): gamma (MONAI ``RandAdjustContrast``), multiplicative polynomial bias field (``RandBiasField``),
  blur (``RandGaussianSmooth``) and Gaussian noise (``RandGaussianNoise``); the background is then set back to
  exactly 0 (skull-stripped input) and the volume is normalised with the engine's own
  :func:`..preprocess.normalise_intensity`, so training sees exactly what inference sees;
* per patch: small rotation / scaling (``RandAffined``), a smooth random deformation of about 1.5 mm
  (``RandSmoothDeformd``: a coarse random field upsampled; MONAI's ``Rand3DElasticd`` does the same job but
  takes ~0.5 s per patch here, as long as a training step) and flips along each axis (``RandFlipd``; flips
  along all three axes, as nnU-Net does, clearly improved the held-out slab over left-right flips alone).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import convert_to_tensor

from ..errors import UserInputError
from ..inference.preprocess import normalise_intensity
from . import mni


def jittered_corner(rng: np.random.Generator, centre, patch, shape) -> tuple[int, ...]:
    """Corner of a ``patch`` centred on ``centre`` with a uniform jitter of up to a quarter patch per axis,
    clipped into ``shape``; one ``rng.integers`` draw per axis, in axis order (shared by every patch sampler so
    that they all draw in the same order)."""
    corner = []
    for c, p, limit in zip(centre, patch, shape, strict=True):
        jitter = int(rng.integers(-p // 4, p // 4 + 1))
        corner.append(int(np.clip(c - p // 2 + jitter, 0, limit - p)))
    return tuple(corner)


def flipped_patches(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, patch, size: int,
                    draw_corner, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` patches of one volume, each flipped along each axis with p 0.5 when ``augment``.

    Per patch, ``draw_corner()`` draws first and then one ``rng.uniform()`` per axis, so a seed gives the same
    patches whatever sampler calls this.

    Args:
        rng: the caller's generator (the flips).
        image: (C, I, J, K) intensities.
        labels: (I, J, K) integer labels.
        patch: patch size (I, J, K).
        size: number of patches.
        draw_corner: returns the next patch's corner (drawing from the same ``rng``).
        augment: flip.

    Returns:
        image (B, C, *patch) float32 and label (B, 1, *patch) int64.
    """
    images, targets = [], []
    for _ in range(size):
        i, j, k = draw_corner()
        window = (slice(i, i + patch[0]), slice(j, j + patch[1]), slice(k, k + patch[2]))
        x, y = image[(slice(None), *window)], labels[window][None]
        if augment:
            for axis in (1, 2, 3):
                if rng.uniform() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
        images.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        targets.append(torch.from_numpy(np.ascontiguousarray(y).astype(np.int64)))
    return torch.stack(images), torch.stack(targets)


class TissueBatches:
    """Draws (image, label) training batches from the template outside the held-out slab.

    Args:
        patch: patch size (I, J, K) on the template grid.
        intensity: the card's ``preprocessing.intensity`` (applied after augmentation).
        seed: seed of all random choices.
        resolution: template resolution in mm (1 or 2).
        augment: apply the augmentations (off: plain normalised patches).
    """

    def __init__(self, patch, intensity: dict, seed: int, resolution: int = 2, augment: bool = True):
        self.patch = tuple(int(p) for p in patch)
        self.intensity = dict(intensity)
        self.augment = augment
        volume = mni.load_template(resolution)
        self.raw = volume.data.astype(np.float32)  # (1, I, J, K)
        self.foreground = self.raw[0] != 0
        self.labels = mni.tissue_labels(resolution)
        self.limit = (*volume.shape[:2], mni.heldout_first_slice(resolution))  # training region: k < limit
        if any(p > s for p, s in zip(self.patch, self.limit, strict=True)):
            message = (f"patch {self.patch} does not fit in the training region {self.limit} (the held-out "
                       f"slab starts at k = {self.limit[2]}); use a smaller --patch")
            raise UserInputError(message)
        train = mni.training_mask(volume.shape, resolution)
        brain = mni.brain_mask(resolution) & train
        self.centres = [np.argwhere(brain & (self.labels == value)) for value in (mni.GREY_MATTER, mni.WHITE_MATTER)]
        self.centres.append(np.argwhere(brain))
        self.rng = np.random.default_rng(seed)
        self.normalised = normalise_intensity(self.raw, self.intensity)[0]
        self._build_transforms(seed)

    def _build_transforms(self, seed: int) -> None:
        from monai.transforms import (
            RandAdjustContrast,
            RandAffined,
            RandBiasField,
            RandFlipd,
            RandGaussianNoise,
            RandGaussianSmooth,
            RandSmoothDeformd,
        )

        keys = ("image", "label")
        self.volume_transforms = [
            RandAdjustContrast(prob=0.8, gamma=(0.7, 1.5)),
            RandBiasField(prob=0.8, degree=3, coeff_range=(-0.18, 0.18)),
            RandGaussianSmooth(prob=0.25, sigma_x=(0.4, 1.0), sigma_y=(0.4, 1.0), sigma_z=(0.4, 1.0)),
            RandGaussianNoise(prob=0.5, mean=0.0, std=0.04),
        ]
        self.patch_transforms = [
            RandAffined(keys, prob=0.7, rotate_range=(0.17, 0.17, 0.17), scale_range=(0.1, 0.1, 0.1),
                        mode=("bilinear", "nearest"), padding_mode="reflection"),
            RandSmoothDeformd(keys, spatial_size=self.patch, rand_size=(5, 5, 4), prob=0.5, def_range=0.05,
                              field_mode="trilinear", grid_mode=("bilinear", "nearest"),
                              grid_padding_mode="reflection"),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
        ]
        for i, transform in enumerate(self.volume_transforms + self.patch_transforms):
            transform.set_random_state(seed=(seed * 7919 + i) % (2**32))

    def augmented_volume(self) -> np.ndarray:
        """One intensity-augmented, normalised (1, I, J, K) copy of the template."""
        if not self.augment:
            return self.normalised
        data = torch.from_numpy(self.raw.copy())
        for transform in self.volume_transforms:
            data = transform(data)
        data = convert_to_tensor(data, track_meta=False).float().numpy()
        data[:, ~self.foreground] = 0.0  # skull-stripped input: exact zeros outside the head
        return normalise_intensity(data, self.intensity)[0]

    def _corner(self) -> tuple[int, int, int]:
        pool = self.centres[int(self.rng.integers(len(self.centres)))]
        centre = pool[int(self.rng.integers(len(pool)))]
        return jittered_corner(self.rng, centre, self.patch, self.limit)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` patches: image (B, 1, *patch) float32 and label (B, 1, *patch) int64."""
        volume = self.augmented_volume()
        images, labels = [], []
        for _ in range(size):
            i, j, k = self._corner()
            window = (slice(i, i + self.patch[0]), slice(j, j + self.patch[1]), slice(k, k + self.patch[2]))
            item = {"image": torch.from_numpy(np.ascontiguousarray(volume[(slice(None), *window)])),
                    "label": torch.from_numpy(self.labels[window][None].astype(np.float32))}
            if self.augment:
                for transform in self.patch_transforms:
                    item = transform(item)
            images.append(convert_to_tensor(item["image"], track_meta=False).float())
            labels.append(convert_to_tensor(item["label"], track_meta=False).round().long())
        return torch.stack(images), torch.stack(labels)


class SyntheticBatches:
    """Training batches from synthetic subjects (:mod:`.synth`): one new subject per batch.

    Subjects are drawn from ``synth.TRAINING_SEEDS`` with ``region="train"`` (the held-out slab's anatomy is cut
    away before warping). Which subject, where its patches lie (centred on a grey-matter, white-matter or any
    tissue voxel, with jitter) and the flips along each axis (p 0.5) all come from one
    ``numpy.random.default_rng(seed)``, so every architecture trained with the same seed sees the same data.
    Each subject is normalised as a whole with the engine's :func:`..preprocess.normalise_intensity`.

    Args:
        patch: patch size (I, J, K) on the template grid.
        intensity: the card's ``preprocessing.intensity``.
        seed: seed of all random choices.
        resolution: template resolution in mm (1 or 2).
        contrast: the generator's contrast model ("t1" or "any").
        augment: flip patches (the generator itself is always random).
    """

    def __init__(self, patch, intensity: dict, seed: int, resolution: int = 2, contrast: str = "t1",
                 augment: bool = True):
        from .synth import TRAINING_SEEDS, SyntheticSubjects

        self.patch = tuple(int(p) for p in patch)
        self.intensity = dict(intensity)
        self.augment = augment
        self.seeds = TRAINING_SEEDS
        self.subjects = SyntheticSubjects(TRAINING_SEEDS, region="train", contrast=contrast, resolution=resolution)
        self.shape = self.subjects.shape
        if any(p > s for p, s in zip(self.patch, self.shape, strict=True)):
            message = f"patch {self.patch} does not fit in the template grid {self.shape}; use a smaller --patch"
            raise UserInputError(message)
        self.rng = np.random.default_rng(seed)

    def _corner(self, pools) -> tuple[int, int, int]:
        pool = pools[int(self.rng.integers(len(pools)))]
        centre = np.unravel_index(pool[int(self.rng.integers(len(pool)))], self.shape)
        return jittered_corner(self.rng, centre, self.patch, self.shape)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` patches of one new subject: image (B, 1, *patch) float32 and label (B, 1, *patch) int64."""
        seed = self.seeds[int(self.rng.integers(len(self.seeds)))]
        image, labels, _ = self.subjects.subject(seed)
        volume = normalise_intensity(image.data, self.intensity)[0]
        flat = labels.ravel()
        pools = [np.flatnonzero(flat == mni.GREY_MATTER), np.flatnonzero(flat == mni.WHITE_MATTER),
                 np.flatnonzero(flat)]
        return flipped_patches(self.rng, volume, labels, self.patch, size, lambda: self._corner(pools), self.augment)


class MixedBatches:
    """Each step either a template batch (:class:`TissueBatches`) or a synthetic-subject batch
    (:class:`SyntheticBatches`), with probability ``synthetic_share`` for the latter.

    The two samplers keep their own generators (seeded with ``seed``, as when they run alone); the choice per
    step comes from a third one (``numpy.random.default_rng([seed, 1])``), so a run is reproducible for a seed.

    Args:
        patch: patch size (I, J, K) on the template grid.
        intensity: the card's ``preprocessing.intensity``.
        seed: seed of all random choices.
        resolution: template resolution in mm (1 or 2).
        contrast: the generator's contrast model ("t1" or "any").
        augment: augment the template patches and flip the synthetic ones.
        synthetic_share: probability of a synthetic batch.
    """

    def __init__(self, patch, intensity: dict, seed: int, resolution: int = 2, contrast: str = "t1",
                 augment: bool = True, synthetic_share: float = 0.5):
        self.template = TissueBatches(patch, intensity, seed, resolution, augment)
        self.synthetic = SyntheticBatches(patch, intensity, seed, resolution, contrast, augment)
        self.synthetic_share = float(synthetic_share)
        self.rng = np.random.default_rng([seed, 1])

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` patches from the template or from one new synthetic subject."""
        source = self.synthetic if self.rng.uniform() < self.synthetic_share else self.template
        return source.batch(size)
