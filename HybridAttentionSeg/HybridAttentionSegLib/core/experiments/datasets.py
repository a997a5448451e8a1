"""Datasets of the experiments: prepared cases, their train / validation / test split, and training batches.

A :class:`Case` is one image on its own (RAS-oriented, optionally resampled) grid, already normalised with the
demo models' intensity rule, plus its integer labels. A :class:`Dataset` holds the three splits and, for the
paired comparisons, the names of its test cases. Two sources build them: :mod:`.demo_data` (synthetic subjects
split by generator seed) and :mod:`.msd` (a Medical Segmentation Decathlon folder split by a seeded
permutation).

:class:`CaseBatches` draws training batches from the training split the way
:class:`..data.sampling.SyntheticBatches` does from synthetic subjects (one case per batch, patches centred on
a voxel of a random foreground class or anywhere, with jitter, random flips), so the existing trainer
(:func:`..training.trainer.train_model`) runs unchanged on any dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.sampling import flipped_patches, jittered_corner

#: the intensity rule of the demo models (z-score over non-zero voxels), applied to every case
INTENSITY = {"method": "zscore", "nonzero": True}


@dataclass
class Case:
    """One prepared case.

    Attributes:
        name: case name (file stem or ``subject-<seed>``), unique within its dataset.
        image: (C, I, J, K) float32, normalised.
        labels: (I, J, K) uint8 label values.
        spacing: voxel size in mm (I, J, K), for HD95.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


@dataclass
class Dataset:
    """Train / validation / test splits of one source, and what identifies it.

    Attributes:
        name: short name for tables ("demo", or the MSD dataset's name).
        description: one sentence for the report (source, split rule).
        classes: ``[(value, name)]`` of the foreground classes (background 0 excluded).
        channels: input channels.
        train, validation, test: the splits.
        identity: JSON-ready description that fixes the data (part of each trial's fingerprint).
    """

    name: str
    description: str
    classes: list[tuple[int, str]]
    channels: int
    train: list[Case] = field(default_factory=list)
    validation: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)
    identity: dict = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        """Network outputs: background plus every label value up to the largest."""
        return 1 + max(value for value, _ in self.classes)

    def fingerprint(self) -> str:
        """Short hash of :attr:`identity`."""
        text = json.dumps(self.identity, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def split_indices(count: int, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """A reproducible train / validation / test split of ``count`` items (seeded permutation, each split >= 1).

    Raises:
        ValueError: fewer than three items.
    """
    if count < 3:
        raise ValueError(f"need at least 3 cases to split into train/validation/test, got {count}")
    order = np.random.default_rng(seed).permutation(count).tolist()
    n_val = max(1, round(count * fractions[1]))
    n_test = max(1, round(count * fractions[2]))
    n_train = count - n_val - n_test
    if n_train < 1:
        n_train, n_val = 1, count - 1 - n_test
    return (sorted(order[:n_train]), sorted(order[n_train:n_train + n_val]),
            sorted(order[n_train + n_val:]))


def downsample(image: np.ndarray, labels: np.ndarray, factor: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-average the image and take the majority label of each ``factor``-cube (tiny volumes for --quick)."""
    if factor == 1:
        return image, labels
    import torch.nn.functional as F

    size = tuple(max(1, s // factor) for s in labels.shape)
    x = F.adaptive_avg_pool3d(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None], size)[0]
    onehot = F.one_hot(torch.from_numpy(labels.astype(np.int64)), classes).permute(3, 0, 1, 2).float()
    votes = F.adaptive_avg_pool3d(onehot[None], size)[0]
    return x.numpy(), votes.argmax(0).numpy().astype(np.uint8)


def _padded(image: np.ndarray, labels: np.ndarray, patch) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad (image) and background-pad (labels) a case that is smaller than the patch."""
    pad = [(0, max(0, p - s)) for p, s in zip(patch, labels.shape, strict=True)]
    if not any(after for _, after in pad):
        return image, labels
    return np.pad(image, [(0, 0), *pad]), np.pad(labels, pad)


class CaseBatches:
    """Training batches from a fixed list of cases (the trainer's ``batches`` object).

    Which case, where its patches lie and the flips all come from one ``numpy.random.default_rng(seed)``, so
    every variant trained with the same seed sees the same patches. Hand-written rather than MONAI's
    ``RandCropByLabelClassesd``: the sampling rule is the one the demo models were trained with
    (:class:`..data.sampling.SyntheticBatches`), and one generator for all draws is what makes the variants'
    training data identical (MONAI's transforms each hold their own random state).

    Args:
        cases: the training split.
        patch: patch size (I, J, K).
        seed: seed of all random choices.
        augment: random flips along each axis (p 0.5).
    """

    def __init__(self, cases: list[Case], patch, seed: int, augment: bool = True):
        if not cases:
            raise ValueError("no training cases")
        self.patch = tuple(int(p) for p in patch)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.cases = [_padded(c.image, c.labels, self.patch) for c in cases]
        self.pools = []
        for _, labels in self.cases:
            flat = labels.ravel()
            pools = [np.flatnonzero(flat == v).astype(np.int32) for v in np.unique(flat) if v]
            self.pools.append([p for p in pools if len(p)] + [None])  # None: anywhere in the case

    def _corner(self, pools, shape) -> tuple[int, ...]:
        pool = pools[int(self.rng.integers(len(pools)))]
        size = int(np.prod(shape)) if pool is None else len(pool)
        drawn = int(self.rng.integers(size))
        centre = np.unravel_index(drawn if pool is None else int(pool[drawn]), shape)
        return jittered_corner(self.rng, centre, self.patch, shape)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` patches of one case: image (B, C, *patch) float32 and label (B, 1, *patch) int64."""
        index = int(self.rng.integers(len(self.cases)))
        image, labels = self.cases[index]
        return flipped_patches(self.rng, image, labels, self.patch, size,
                               lambda: self._corner(self.pools[index], labels.shape), self.augment)
