"""Lean intensity statistics (issue 14, CT memory): the same numbers as before, without float64 image copies.

References: ``np.percentile`` on float64 copies (what the statistics used to be), the previous float64
foreground written out below exactly as it was (commit 7be8363, ``intensity.py``), and MONAI's own
``NormalizeIntensity`` / ``ScaleIntensityRange`` (to float32 rounding: MONAI 1.x computes in torch), never
the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from HybridAttentionSegLib.core.inference import intensity
from HybridAttentionSegLib.core.inference.inverse import normalise_map_inplace
from HybridAttentionSegLib.core.inference.quantiles import abs_pieces, percentiles


def _previous_foreground(x: np.ndarray) -> np.ndarray:
    """The float64 foreground of commit 7be8363, verbatim (full-size float64 copies and all)."""
    a = np.abs(x.astype(np.float64, copy=False))
    scale = float(np.percentile(a, 99.9)) if a.size else 0.0
    scale = scale if scale > 0 else (float(a.max()) if a.size else 0.0)
    if scale <= 0:
        return np.zeros(x.shape, bool)
    band = intensity.NOISE_BAND * scale
    while np.count_nonzero(a <= band) < intensity.NOISE_MIN_SHARE * a.size and band < intensity.NOISE_BAND_MAX * scale:
        band *= 2.0
    sigma = 0.0
    for _ in range(3):
        near = a[a <= band]
        if near.size < intensity.NOISE_MIN_SHARE * a.size:
            sigma = 0.0
            break
        low, median, high = (float(v) for v in np.percentile(near, [10, 50, 90]))
        if not (median > 0 and low / median <= intensity.NOISE_LOW_MAX
                and intensity.NOISE_HIGH[0] <= high / median <= intensity.NOISE_HIGH[1]):
            sigma = 0.0
            break
        sigma = median / 1.1774
        band = min(max(band, 3.0 * sigma), intensity.NOISE_BAND_MAX * scale)
    return a > max(intensity.REL_FLOOR * scale, intensity.NOISE_FACTOR * sigma)


def _volumes():
    rng = np.random.default_rng(3)
    shape = (48, 40, 36)
    tissue = np.zeros(shape, np.float32)
    tissue[8:40, 6:34, 5:30] = rng.uniform(100, 900, (32, 28, 25))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    yield "clean", tissue
    yield "tiny background", np.where(tissue > 0, tissue, 1e-17).astype(np.float32)
    for sigma in (5.0, 15.0, 40.0):  # Rician-like MR backgrounds
        noise = sigma * np.hypot(rng.normal(0, 1, shape), rng.normal(0, 1, shape))
        yield f"noise {sigma}", np.where(tissue > 0, tissue, noise).astype(np.float32)
    yield "blob tails", np.exp(-(grid ** 2).sum(0) / 0.05).astype(np.float32)
    ct = np.where(tissue > 0, 40.0, -1000.0) + rng.normal(0, 15, shape)
    yield "ct", np.clip(ct, -1024, 3000).astype(np.int16).astype(np.float32)
    yield "zeros", np.zeros(shape, np.float32)
    yield "negative", (-tissue * np.float32(1e-20))


@pytest.mark.parametrize("kind", range(6))
def test_percentiles_are_numpys_on_float64_copies_bit_for_bit(kind):
    rng = np.random.default_rng(kind)
    for _ in range(20):
        n = int(rng.integers(1, 60_000))
        values = [rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30), rng.integers(-1000, 1000, n),
                  np.where(rng.random(n) < 0.7, 0.0, rng.standard_normal(n)), rng.exponential(1e-3, n),
                  np.full(n, 3.25), rng.standard_normal(n) * 1e-40][kind]  # last: subnormal float32
        x = np.asarray(values).astype(np.float32)
        qs = [0, 10, 50, 90, 99.9, 100, float(rng.uniform(0, 100))]
        expected = np.percentile(np.abs(x).astype(np.float64), qs)
        assert percentiles(abs_pieces(x), qs) == list(expected)


def test_percentiles_of_a_filtered_subset_and_of_nothing():
    x = np.random.default_rng(0).standard_normal(50_000).astype(np.float32)
    a = np.abs(x).astype(np.float64)
    assert percentiles(abs_pieces(x, keep=lambda v: v <= np.float64(0.5)), [10, 50, 90]) == list(
        np.percentile(a[a <= 0.5], [10, 50, 90]))
    assert percentiles(abs_pieces(x, keep=lambda v: v > np.float64(1e9)), [50]) is None


@pytest.mark.parametrize("name", [name for name, _ in _volumes()])
def test_foreground_is_the_previous_float64_foreground(name):
    x = dict(_volumes())[name]
    assert np.array_equal(intensity.foreground(x), _previous_foreground(x))


def _previous_zscore(x: np.ndarray) -> np.ndarray:
    """The z-score of commit 7be8363, verbatim (``nonzero``)."""
    mask = _previous_foreground(x)
    values = x[mask]
    top = float(np.abs(values).max())
    factor = np.float32(2.0 ** -np.frexp(top)[1]) if top > 0 else np.float32(1.0)
    scaled = values * factor
    mean, std = np.mean(scaled), np.std(scaled)
    if not std > 0:
        std = factor
    out = np.zeros(x.shape, np.float32)
    out[mask] = (scaled - mean) / std
    return out


@pytest.mark.parametrize("name", ["clean", "tiny background", "noise 15.0", "blob tails", "ct", "negative"])
def test_zscore_is_the_previous_one_and_monais(name):
    from monai.transforms import NormalizeIntensity

    x = dict(_volumes())[name]
    got = intensity.normalise_intensity(x[None], {"method": "zscore", "nonzero": True})[0][0]
    assert np.array_equal(got, _previous_zscore(x))
    if name != "negative":  # MONAI (torch statistics) on the same foreground, to float32 rounding
        mask = _previous_foreground(x)
        expected = np.asarray(NormalizeIntensity(nonzero=True)(np.where(mask, x, 0)[None])[0])
        assert np.abs(got - np.where(mask, expected, 0)).max() < 1e-5
    everything = np.asarray(NormalizeIntensity(nonzero=False)(x[None])[0])
    assert np.abs(intensity.normalise_intensity(x[None], {"method": "zscore"})[0][0] - everything).max() < 1e-5


def test_window_is_monai_scale_intensity_range():
    from monai.transforms import ScaleIntensityRange

    x = dict(_volumes())["ct"][None]
    for clip, (b_min, b_max) in ((True, (0.0, 1.0)), (False, (-1.0, 1.0))):
        card = {"method": "window", "window": [-175.0, 250.0], "range": [b_min, b_max], "clip": clip}
        expected = np.asarray(ScaleIntensityRange(-175.0, 250.0, b_min, b_max, clip=clip)(x))
        assert np.abs(intensity.normalise_intensity(x, card)[0] - expected).max() < 1e-6


def test_map_normalisation_is_the_float64_percentile_one():
    rng = np.random.default_rng(5)
    for volume in (rng.gamma(2.0, 3.0, (40, 30, 20)), np.zeros((10, 10, 10)), rng.integers(0, 3, (20, 20, 20))):
        x = volume.astype(np.float32)
        shifted = np.maximum(x - x.min(), 0)
        top = float(np.percentile(shifted.astype(np.float64), 99.9)) or float(shifted.max())
        expected = np.clip(shifted / top, 0, 1) if top > 0 else np.zeros_like(x)
        assert np.array_equal(normalise_map_inplace(x.copy()), expected.astype(np.float32))
