"""Validation statistics (``core.training.validation``): Dice counts and bootstrap CIs on hand-made cases."""

from __future__ import annotations

import numpy as np
from HybridAttentionSegLib.core.training.validation import (
    block_bootstrap_dice,
    bootstrap_mean_ci,
    dice_counts,
    dice_from_counts,
)


def test_dice_counts_by_hand():
    reference = np.zeros((4, 4, 4), np.uint8)
    reference[:2] = 1  # 32 voxels of class 1
    reference[2:] = 2  # 32 of class 2
    prediction = reference.copy()
    prediction[0, 0] = 2  # 4 voxels of class 1 called class 2
    counts = dice_counts(prediction, reference, [1, 2])
    np.testing.assert_array_equal(counts, [[28, 0, 4], [32, 4, 0]])
    np.testing.assert_allclose(dice_from_counts(counts), [56 / 60, 64 / 68])
    # empty prediction and reference: Dice 1 by convention
    assert dice_from_counts(dice_counts(prediction, reference, [7]))[0] == 1.0


def test_bootstrap_mean_ci_brackets_the_mean():
    mean, (lo, hi) = bootstrap_mean_ci([0.9, 0.9, 0.9])
    assert mean == 0.9 and lo == hi == 0.9
    values = np.random.default_rng(1).normal(0.8, 0.05, 30)
    mean, (lo, hi) = bootstrap_mean_ci(values)
    assert lo < mean < hi
    # the percentile CI of a mean of 30 values is about +-1.96 standard errors
    half = 1.96 * values.std() / np.sqrt(30)
    assert abs((hi - lo) / 2 - half) < 0.35 * half
    assert bootstrap_mean_ci(values, seed=3) == bootstrap_mean_ci(values, seed=3)


def test_block_bootstrap_dice():
    reference = np.zeros((16, 16, 16), np.uint8)
    reference[2:14, 2:14, 2:14] = 1
    [(dice, ci)] = block_bootstrap_dice(reference, reference, [1], block=4)
    assert dice == 1.0 and ci == [1.0, 1.0]
    prediction = reference.copy()
    prediction[2:14, 2:14, 2:5] = 0  # a quarter of the object missed, all in one layer of blocks
    [(dice, (lo, hi))] = block_bootstrap_dice(prediction, reference, [1], block=4)
    assert dice == round(2 * 1296 / (1296 + 1728), 4)
    assert lo < dice < hi <= 1.0
    # a mask restricts both the point estimate and the blocks
    mask = np.zeros_like(reference, bool)
    mask[:, :, 8:] = True
    [(dice, ci)] = block_bootstrap_dice(prediction, reference, [1], block=4, mask=mask)
    assert dice == 1.0 and ci == [1.0, 1.0]


def test_validate_refuses_other_tasks_and_bad_counts(capsys):
    from HybridAttentionSegLib.cli import main

    assert main(["validate", "--model", "swin-unetr-btcv"]) == 2
    err = capsys.readouterr().err
    assert "does not segment Gray matter and White matter" in err and len(err.strip().splitlines()) == 1
    assert main(["validate", "--model", "mni-tissue-transunet", "--subjects", "3", "--agreement-subjects", "4"]) == 2
    assert "--agreement-subjects" in capsys.readouterr().err
