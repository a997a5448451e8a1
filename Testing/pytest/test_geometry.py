"""Geometry: every output lands exactly on the input grid, for any orientation, obliquity and spacing.

A synthetic sphere goes through the real engine (preprocessing to RAS + target spacing, sliding window,
inversion) with a thresholding "model" whose answer is known, so any geometric error shows up as a shift.
"""

import itertools

import numpy as np
import pytest
from HybridAttentionSegLib.core.inference.engine import Segmenter
from HybridAttentionSegLib.core.models.cards import ModelCard
from synthetic import ThresholdNet, card_dict, centroid, rotation, sphere_volume

PERMUTATIONS = list(itertools.permutations(range(3)))
FLIPS = list(itertools.product((1, -1), repeat=3))


def _segment(volume, spacing=(1.5, 1.5, 1.5)):
    card = ModelCard.from_dict(card_dict("attention_unet", roi=(32, 32, 32), spacing=spacing))
    return Segmenter(card, device="cpu", model=ThresholdNet()).run(volume)


def _check(volume, result):
    truth = volume.data[0] > 0.5
    assert result.labelmap.shape == volume.shape
    np.testing.assert_array_equal(result.affine, volume.affine)
    assert result.probabilities.shape[1:] == volume.shape
    predicted = result.labelmap == 1
    assert predicted.any()
    shift = np.abs(centroid(predicted) - centroid(truth))
    assert shift.max() <= 0.5, f"centroid off by {shift} voxels"
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert dice > 0.85


@pytest.mark.parametrize("perm", PERMUTATIONS, ids=lambda p: "perm" + "".join(map(str, p)))
@pytest.mark.parametrize("flip", FLIPS, ids=lambda f: "flip" + "".join("+" if s > 0 else "-" for s in f))
def test_all_axis_permutations_and_flips(perm, flip):
    directions = np.eye(3)[:, list(perm)] * np.array(flip)
    volume = sphere_volume((30, 36, 24), directions, (1.2, 1.0, 1.4), (3.0, -4.0, 2.0), 8.0)
    _check(volume, _segment(volume))


def test_lps_oriented_input():
    directions = np.diag([-1.0, -1.0, 1.0])  # DICOM/ITK-style LPS voxel axes
    volume = sphere_volume((32, 32, 32), directions, (1.0, 1.0, 1.0), (-5.0, 6.0, 0.0), 9.0)
    _check(volume, _segment(volume))


def test_oblique_direction_matrix():
    directions = rotation(2, 20.0) @ rotation(0, 20.0)
    volume = sphere_volume((36, 36, 30), directions, (1.0, 1.0, 1.2), (2.0, 3.0, -1.0), 9.0)
    result = _segment(volume)
    _check(volume, result)


def test_strongly_anisotropic_spacing():
    volume = sphere_volume((96, 96, 12), np.eye(3), (0.5, 0.5, 5.0), (4.0, -3.0, 2.5), 18.0)
    _check(volume, _segment(volume, spacing=(1.5, 1.5, 1.5)))


def test_no_resampling_when_spacing_matches():
    volume = sphere_volume((40, 40, 40), np.eye(3), (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), 12.0)
    result = _segment(volume)
    np.testing.assert_array_equal(result.labelmap == 1, volume.data[0] > 0.5)


def test_sigmoid_region_card_paints_regions_in_order():
    """Region-based (sigmoid, BraTS-style) cards: nested regions painted in card order, no background channel."""
    import torch
    from HybridAttentionSegLib.core.inference.engine import decide

    data = card_dict("attention_unet", roi=(32, 32, 32))
    data["labels"] = data["labels"] + [{"value": 3, "name": "Core", "color": [1, 0, 0]}]
    data["output"] = {"activation": "sigmoid", "channels": 2, "threshold": 0.5,
                      "regions": [{"channel": 0, "label": 2}, {"channel": 1, "label": 3}]}
    card = ModelCard.from_dict(data)
    outer = torch.zeros(10, 10, 10)
    outer[2:8, 2:8, 2:8] = 0.9
    inner = torch.zeros(10, 10, 10)
    inner[4:6, 4:6, 4:6] = 0.8
    labelmap = decide(card, torch.stack([outer, inner]))
    assert int((labelmap == 3).sum()) == 8
    assert int((labelmap == 2).sum()) == 6 ** 3 - 8
    assert int((labelmap == 0).sum()) == 1000 - 6 ** 3
