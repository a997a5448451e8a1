"""What ``hybridseg experiment review`` measures: Dice/HD95 per class, CIs, paired comparisons, FLOPs, tables.

Expected values are worked out by hand from the inputs (overlaps of cubes, FLOPs of one convolution), not
taken from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from HybridAttentionSegLib.core.experiments.metrics import (
    case_metrics,
    gflops_per_window,
    mean_ci,
    mean_sd,
    paired_comparison,
)
from HybridAttentionSegLib.core.experiments.tables import summary_rows


def _cube(shape, start, size, value=1):
    out = np.zeros(shape, np.uint8)
    out[start[0]:start[0] + size, start[1]:start[1] + size, start[2]:start[2] + size] = value
    return out


def test_dice_of_shifted_cubes_and_perfect_and_missed_classes():
    reference = _cube((24, 24, 24), (4, 4, 4), 10) + _cube((24, 24, 24), (16, 16, 16), 4, 2)
    prediction = _cube((24, 24, 24), (6, 4, 4), 10)  # class 1 shifted by 2 voxels, class 2 missed
    dice, hd95 = case_metrics(prediction, reference, [1, 2], (1.0, 1.0, 1.0))
    assert dice[0] == pytest.approx(2 * 800 / 2000)  # overlap 8 x 10 x 10 of two 1000-voxel cubes
    assert dice[1] == 0.0
    assert 0.0 < hd95[0] <= 2.0  # no surface point is farther than the shift
    assert hd95[1] == pytest.approx(np.sqrt(3 * 24.0 ** 2))  # a missed class counts as the worst miss
    same, zero = case_metrics(reference, reference, [1, 2], (1.0, 1.0, 1.0))
    assert same == [1.0, 1.0] and zero == [0.0, 0.0]
    empty_dice, empty_hd = case_metrics(np.zeros_like(reference), np.zeros_like(reference), [1], (1, 1, 1))
    assert empty_dice == [1.0] and empty_hd == [0.0]


def test_hd95_is_in_millimetres():
    reference = _cube((24, 24, 24), (4, 4, 4), 10)
    prediction = _cube((24, 24, 24), (7, 4, 4), 10)
    _, one = case_metrics(prediction, reference, [1], (1.0, 1.0, 1.0))
    _, two = case_metrics(prediction, reference, [1], (2.0, 2.0, 2.0))
    assert one[0] > 0 and two[0] == pytest.approx(2 * one[0])


def test_gflops_of_one_convolution():
    model = torch.nn.Conv3d(2, 4, kernel_size=3, padding=1, bias=False)
    # every output voxel: 2 x 27 multiply-adds per output channel, 2 FLOPs each
    expected = 2 * (2 * 27) * 4 * (8 * 8 * 16) / 1e9
    assert gflops_per_window(model, 2, (8, 8, 16)) == pytest.approx(expected)
    assert model.training  # left as it was


def test_paired_comparison_finds_a_consistent_difference():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0.6, 0.8, 20)
    better = baseline + 0.05 + rng.normal(0, 0.005, 20)
    result = paired_comparison(better, baseline)
    assert result["difference"] == pytest.approx(0.05, abs=0.005)
    assert result["ci"][0] > 0.04 and result["ci"][1] < 0.06 and result["p_wilcoxon"] < 0.001
    noise = paired_comparison(baseline + rng.normal(0, 0.01, 20), baseline)
    assert noise["ci"][0] < 0 < noise["ci"][1] and noise["p_wilcoxon"] > 0.01
    same = paired_comparison(baseline, baseline)
    assert same["difference"] == 0 and same["p_wilcoxon"] == 1.0
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])


def test_mean_ci_and_mean_sd():
    mean, (low, high) = mean_ci([0.2, 0.4, 0.6, 0.8])
    assert mean == pytest.approx(0.5) and 0.2 <= low < 0.5 < high <= 0.8
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert mean_sd([4.0]) == (4.0, None)


def _trial(variant, seed, dice, attention="self", layers=1):
    cases = [f"c{i}" for i in range(len(dice))]
    return {"variant": variant, "seed": seed, "architecture": "cnn_self_attention", "attention": attention,
            "layers": layers, "params": 10, "gflops": 1.0, "train_s": 2.0, "latency_s": 0.5, "peak_mem_mb": 100.0,
            "test": {"cases": cases, "dice": [[d, d] for d in dice], "hd95": [[1.0, 1.0] for _ in dice]}}


def test_summary_pairs_variants_with_the_baseline_case_by_case():
    classes = [(1, "a"), (2, "b")]
    results = [_trial("cnn", 0, [0.5, 0.6, 0.7, 0.8], "none", 0), _trial("cnn", 1, [0.5, 0.6, 0.7, 0.8], "none", 0),
               _trial("self-1", 0, [0.6, 0.7, 0.8, 0.9]), _trial("self-1", 1, [0.4, 0.5, 0.6, 0.7])]
    rows = {r["variant"]: r for r in summary_rows(results, classes, ["cnn", "self-1"], "cnn")}
    assert rows["cnn"]["seeds"] == 2 and rows["cnn"]["dice_mean"] == pytest.approx(0.65)
    assert rows["cnn"]["dice_sd"] == 0.0 and "d_dice" not in rows["cnn"]
    assert rows["self-1"]["dice_sd"] == pytest.approx(np.std([0.75, 0.55], ddof=1), abs=1e-4)
    assert rows["self-1"]["d_dice"] == pytest.approx(0.0, abs=1e-9)  # the two seeds cancel case by case
    assert rows["self-1"]["p_dice"] == 1.0
