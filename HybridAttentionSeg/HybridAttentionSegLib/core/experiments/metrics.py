"""What the experiments measure: accuracy (MONAI's Dice and HD95), statistics over cases and seeds, compute.

* :func:`case_metrics`: Dice (``monai.metrics.DiceMetric``) and HD95 (``compute_hausdorff_distance``,
  ``percentile=95``, symmetric, in mm with the case's spacing) per class. Empty classes: Dice 1 when prediction
  and reference are both empty, 0 when one is; HD95 0 when both are empty and the volume's diagonal (the
  largest possible distance) when one is, so a missed structure counts as the worst miss rather than vanishing.
* :func:`mean_ci`: the mean over test cases and its percentile bootstrap 95 % CI
  (:func:`..training.validation.bootstrap_mean_ci`).
* :func:`paired_comparison`: a variant against the baseline on the same test cases: the mean difference, its
  paired bootstrap 95 % CI (the per-case differences resampled) and the two-sided Wilcoxon signed-rank p
  (``scipy.stats.wilcoxon``).
* :func:`count_parameters`, :func:`gflops_per_window` (``torch.utils.flop_counter.FlopCounterMode``: one forward
  of one window, multiply-adds counted as two FLOPs), :func:`peak_rss_mb` (``resource.getrusage``: the process's
  peak resident set) and :func:`peak_gpu_mb` (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import math
import resource
import sys

import numpy as np
import torch


def case_metrics(prediction: np.ndarray, reference: np.ndarray, values, spacing) -> tuple[list[float], list[float]]:
    """(Dice per class, HD95 in mm per class) of one case; ``values`` are the class label values."""
    from monai.metrics import DiceMetric, compute_hausdorff_distance

    prediction = torch.from_numpy(np.asarray(prediction))
    reference = torch.from_numpy(np.asarray(reference))
    pred = torch.stack([prediction == v for v in values])[None].float()
    ref = torch.stack([reference == v for v in values])[None].float()
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    dice = metric(pred, ref)[0].tolist()
    diagonal = float(np.linalg.norm(np.asarray(reference.shape) * np.asarray(spacing, dtype=np.float64)))
    hd95 = []
    for c in range(len(values)):
        has_pred, has_ref = bool(pred[0, c].any()), bool(ref[0, c].any())
        if not has_pred and not has_ref:
            hd95.append(0.0)
        elif has_pred != has_ref:
            hd95.append(diagonal)
        else:
            distance = compute_hausdorff_distance(pred[:, c:c + 1], ref[:, c:c + 1], include_background=True,
                                                  percentile=95, spacing=[float(s) for s in spacing])
            hd95.append(float(distance[0, 0]))
    return [float(d) for d in dice], hd95


def mean_ci(values, seed: int = 0) -> tuple[float, list[float]]:
    """Mean of ``values`` and its percentile bootstrap 95 % CI (resampling the values)."""
    from ..training.validation import bootstrap_mean_ci

    values = [float(v) for v in values]
    if len(values) == 1:
        return round(values[0], 4), [round(values[0], 4)] * 2
    return bootstrap_mean_ci(values, seed=seed)


def paired_comparison(variant, baseline, seed: int = 0) -> dict:
    """``variant - baseline`` on the same cases: mean difference, paired bootstrap 95 % CI, Wilcoxon p."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(variant, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired values must be two equal-length lists, got {a.shape} and {b.shape}")
    difference = a - b
    mean, interval = mean_ci(difference, seed=seed)
    if np.allclose(difference, 0.0):
        p = 1.0
    else:
        p = float(wilcoxon(a, b, zero_method="zsplit", alternative="two-sided").pvalue)
    return {"difference": mean, "ci": interval, "p_wilcoxon": round(p, 4), "n": int(len(a))}


def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value) over seeds."""
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if not len(values):
        return float("nan"), None
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return int(sum(p.numel() for p in model.parameters()))


def gflops_per_window(model: torch.nn.Module, channels: int, window, device="cpu") -> float:
    """GFLOPs of one forward pass on one (1, channels, *window) window (FlopCounterMode; a MAC = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, channels, *[int(w) for w in window]), device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb(device) -> float | None:
    """Peak CUDA memory allocated by torch on ``device`` in MiB, or None off the GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
