"""Deletion and insertion curves (Petsiuk et al., RISE, 2018) adapted to segmentation.

Voxels of the evaluation *region* are ranked by a map (highest first). Deletion replaces the top fraction f
of them by a baseline and watches the model's score fall; insertion starts from the baseline everywhere in
the region and restores the top fraction f of the original voxels. The score of a segment is the model's
mean probability of that segment inside **its own mask on the unperturbed input** (restricted to the
region); a class map is scored on its class, a class-agnostic map on the mean over every segment (the
foreground probability alone barely moves when tissue is replaced by tissue-like values).

Only the order of the map's values matters (Gomez et al.: the curves are invariant to monotone rescaling);
ties are broken by a fixed random permutation, never by voxel index (which would sweep the volume slice by
slice). Rankings are compared with random rankings: Gaussian-smoothed white noise, so a random ranking
removes blobs like a smooth map does, rather than salt-and-pepper voxels a blurred baseline barely changes.

Hand-written on purpose: Quantus and captum implement these curves for classifiers on 2D images (a scalar
output per image, per-pixel or patch removal); here the output is a 3D probability volume, the score is
taken inside the model's own masks and the perturbation is limited to a region of a larger input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

#: (C, I, J, K) input -> (N, I, J, K) probabilities on the same grid
PredictFn = Callable[[np.ndarray], np.ndarray]


def smooth(data: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth every channel of a (C, I, J, K) array (MONAI's separable filter; edges replicate)."""
    if sigma <= 0:
        return np.asarray(data, dtype=np.float32).copy()
    from monai.networks.layers import GaussianFilter

    tensor = torch.as_tensor(np.asarray(data, dtype=np.float32))[:, None]
    with torch.no_grad():
        out = GaussianFilter(3, sigma)(tensor)
    return out[:, 0].numpy()


def order_by_map(values: np.ndarray, region: np.ndarray, tiebreak_seed: int = 0) -> np.ndarray:
    """Flat indices of the ``region`` voxels, highest ``values`` first, ties in a seeded random order."""
    flat = np.flatnonzero(region)
    scores = np.asarray(values, dtype=np.float64).ravel()[flat]
    tiebreak = np.random.default_rng(tiebreak_seed).permutation(flat.size)
    return flat[np.lexsort((tiebreak, -scores))]


def random_map(shape, seed: int, smoothing: float) -> np.ndarray:
    """A random ranking field: white noise from ``seed``, Gaussian-smoothed by ``smoothing`` voxels."""
    noise = np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)
    return smooth(noise[None], smoothing)[0]


def baseline_image(data: np.ndarray, region: np.ndarray, kind: str, sigma: float) -> np.ndarray:
    """The (C, I, J, K) image a removed voxel takes its value from: ``blur`` or ``mean`` (of the region)."""
    data = np.asarray(data, dtype=np.float32)
    if kind == "blur":
        return smooth(data, sigma)
    if kind == "mean":
        means = data[:, region].mean(axis=1)
        return np.broadcast_to(means[:, None, None, None], data.shape).astype(np.float32)
    message = f"unknown perturbation baseline {kind!r}; use 'blur' or 'mean'"
    raise ValueError(message)


class SegmentScorer:
    """Mean probability of every segment inside its own unperturbed mask (within the region).

    Args:
        channels: probability channel of each scored segment, in the order scores are returned.
        masks: bool (I, J, K) mask of each segment on the unperturbed input, already intersected with the region.
    """

    def __init__(self, channels: list[int], masks: list[np.ndarray]):
        self.channels = list(channels)
        self.indices = [np.flatnonzero(m) for m in masks]

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        flat = probabilities.reshape(probabilities.shape[0], -1)
        return np.array([float(flat[c, idx].mean()) if idx.size else float("nan")
                         for c, idx in zip(self.channels, self.indices, strict=True)])


def auc(values, fractions) -> float:
    """Trapezoid area under ``values`` over ``fractions``, divided by the covered range (a mean score)."""
    values = np.asarray(values, dtype=np.float64)
    fractions = np.asarray(fractions, dtype=np.float64)
    span = float(fractions[-1] - fractions[0])
    if span <= 0:
        return float(values[0])
    area = float(np.sum((values[1:] + values[:-1]) * np.diff(fractions)) / 2.0)
    return area / span


class Perturber:
    """Runs deletion and insertion curves for many rankings against one input and baseline.

    The points shared by every ranking (the unperturbed input; the fully replaced region) are computed once.
    """

    def __init__(self, predict: PredictFn, scorer: SegmentScorer, data: np.ndarray, region: np.ndarray,
                 fractions, baseline: np.ndarray):
        self.predict = predict
        self.scorer = scorer
        self.data = np.asarray(data, dtype=np.float32)
        self.region = region
        self.fractions = tuple(float(f) for f in fractions)
        self.baseline = baseline
        self.n_region = int(region.sum())
        self.calls = 0
        self._clean: np.ndarray | None = None
        self._empty: np.ndarray | None = None

    def _score(self, data: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.scorer(self.predict(data))

    def _count(self, fraction: float) -> int:
        return int(round(fraction * self.n_region))

    def clean_scores(self) -> np.ndarray:
        if self._clean is None:
            self._clean = self._score(self.data)
        return self._clean

    def empty_scores(self) -> np.ndarray:
        if self._empty is None:
            data = self.data.copy()
            data[:, self.region] = self.baseline[:, self.region]
            self._empty = self._score(data)
        return self._empty

    def deletion(self, order: np.ndarray) -> np.ndarray:
        """(n_fractions, n_segments) scores after removing the top fraction of ``order``."""
        rows = []
        flat_data = self.data.reshape(self.data.shape[0], -1)
        flat_base = self.baseline.reshape(self.baseline.shape[0], -1)
        for fraction in self.fractions:
            n = self._count(fraction)
            if n == 0:
                rows.append(self.clean_scores())
                continue
            data = flat_data.copy()
            data[:, order[:n]] = flat_base[:, order[:n]]
            rows.append(self._score(data.reshape(self.data.shape)))
        return np.stack(rows)

    def insertion(self, order: np.ndarray) -> np.ndarray:
        """(n_fractions, n_segments) scores after restoring the top fraction of ``order`` into the baseline."""
        rows = []
        flat_data = self.data.reshape(self.data.shape[0], -1)
        region_flat = np.flatnonzero(self.region)
        start = flat_data.copy()
        start[:, region_flat] = self.baseline.reshape(self.baseline.shape[0], -1)[:, region_flat]
        for fraction in self.fractions:
            n = self._count(fraction)
            if n == 0:
                rows.append(self.empty_scores())
                continue
            data = start.copy()
            data[:, order[:n]] = flat_data[:, order[:n]]
            rows.append(self._score(data.reshape(self.data.shape)))
        return np.stack(rows)
