"""Uncertainty review (core/review.py): entropy and ranked uncertain regions."""

from __future__ import annotations

import numpy as np
import pytest
from HybridAttentionSegLib.core.correction.review import entropy, uncertain_regions

LABELS = [{"value": 1, "name": "Liver"}, {"value": 2, "name": "Spleen"}]


def test_entropy_is_zero_when_certain_and_one_when_uniform():
    certain = np.zeros((3, 4, 4, 4), np.float32)
    certain[1] = 1.0
    uniform = np.full((3, 4, 4, 4), 1 / 3, np.float32)
    assert np.allclose(entropy(certain), 0.0, atol=1e-5)
    assert np.allclose(entropy(uniform), 1.0, atol=1e-5)
    half = np.zeros((3, 1, 1, 1), np.float32)
    half[0] = half[2] = 0.5
    assert entropy(half)[0, 0, 0] == pytest.approx(np.log(2) / np.log(3), abs=1e-5)


@pytest.fixture
def scene():
    """Two segments with uncertain blobs of known size, and a one-voxel uncertain band along a boundary."""
    shape = (40, 40, 40)
    labelmap = np.zeros(shape, np.uint8)
    labelmap[:, :20] = 1
    labelmap[:, 20:] = 2
    uncertainty = np.zeros(shape, np.float32)
    uncertainty[5:13, 5:13, 5:13] = 0.9  # 512 voxels in segment 1: highest score
    uncertainty[25:30, 25:30, 25:30] = 0.8  # 125 voxels in segment 2
    uncertainty[30:34, 5:9, 30:34] = 1.0  # 64 voxels in segment 1
    uncertainty[:, 19, :] = np.maximum(uncertainty[:, 19, :], 0.7)  # a thin boundary band
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-40.0, -40.0, -60.0]
    return uncertainty, labelmap, affine


def test_regions_are_ranked_by_size_times_uncertainty(scene):
    uncertainty, labelmap, affine = scene
    regions = uncertain_regions(uncertainty, labelmap, affine, labels=LABELS, block_mm=0)
    assert [(r["segment"], r["voxels"]) for r in regions] == [(1, 512), (2, 125), (1, 64)]
    assert [r["rank"] for r in regions] == [1, 2, 3]
    first = regions[0]
    assert first["name"] == "Liver" and first["score"] == pytest.approx(512 * 0.9, rel=1e-4)
    assert first["mean_uncertainty"] == pytest.approx(0.9, abs=1e-4)
    assert first["centroid_ijk"] == pytest.approx([8.5, 8.5, 8.5])
    assert first["centroid_ras"] == pytest.approx([-40 + 17.0, -40 + 17.0, -60 + 25.5])
    assert first["volume_ml"] == pytest.approx(512 * 12 / 1000)
    i, j, k = first["focus_ijk"]
    assert uncertainty[i, j, k] == pytest.approx(0.9)  # the focus point is inside the region


def test_thin_bands_are_dropped_unless_asked_for(scene):
    uncertainty, labelmap, affine = scene
    with_band = uncertain_regions(uncertainty, labelmap, affine, opening=0, block_mm=0)
    assert max(r["voxels"] for r in with_band) >= 40 * 40  # the band is one big region
    assert all(r["voxels"] <= 512 for r in uncertain_regions(uncertainty, labelmap, affine, block_mm=0))


def test_probabilities_decide_the_segment_of_background_voxels():
    labelmap = np.zeros((20, 20, 20), np.uint8)
    uncertainty = np.zeros(labelmap.shape, np.float32)
    uncertainty[5:10, 5:10, 5:10] = 0.8
    probabilities = np.zeros((3, *labelmap.shape), np.float32)
    probabilities[0] = 0.5
    probabilities[2] = 0.4  # the model hesitates between background and segment 2
    probabilities[1] = 0.1
    regions = uncertain_regions(uncertainty, labelmap, probabilities=probabilities, labels=LABELS)
    assert [(r["segment"], r["name"]) for r in regions] == [(2, "Spleen")]


def test_large_regions_are_cut_into_blocks_and_limits_apply():
    labelmap = np.ones((60, 20, 20), np.uint8)
    uncertainty = np.full(labelmap.shape, 0.6, np.float32)
    regions = uncertain_regions(uncertainty, labelmap, block_mm=20.0)
    assert len(regions) == 3 and all(r["voxels"] == 20 * 20 * 20 for r in regions)
    assert len(uncertain_regions(uncertainty, labelmap, block_mm=20.0, max_regions=2)) == 2
    assert uncertain_regions(uncertainty, labelmap, block_mm=20.0, min_voxels=10 ** 6) == []
    assert uncertain_regions(np.zeros_like(uncertainty), labelmap) == []
    with pytest.raises(ValueError, match="grid"):
        uncertain_regions(uncertainty[:10], labelmap)
