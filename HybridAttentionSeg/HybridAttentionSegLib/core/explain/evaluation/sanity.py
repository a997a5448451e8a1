"""Sanity: cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018).

The parameterised modules of the network are put in forward order (the order their forward pre-hooks fire
on one window) and cut into ``Protocol.cascade_steps`` consecutive groups. Step s re-initialises the s groups
nearest the **output** (top-down, cascading: earlier steps stay randomised), with the weights a fresh build of
the architecture gets from ``Protocol.randomisation_seed``; the last step is the fully random network. At each
step the map is recomputed on the same input and compared with the trained model's map by the **Spearman rank
correlation** over the region's voxels. A map that stays highly correlated when the weights that made the
decision are gone explains the architecture (or the image), not the model.

The data/label randomisation test of the same paper needs models retrained on permuted labels; its short
version is :mod:`.data_randomisation`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank (as scipy.stats.rankdata; scipy is not a core
    dependency of the extension)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [values.size]))
    ranks = np.empty(values.size, dtype=np.float64)
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end - 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long arrays; 0 when either is constant (no ranking)."""
    ra = _average_ranks(np.asarray(a, dtype=np.float64).ravel())
    rb = _average_ranks(np.asarray(b, dtype=np.float64).ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = float(np.sqrt((ra @ ra) * (rb @ rb)))
    return float(ra @ rb) / denominator if denominator > 0 else 0.0


def forward_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the modules that own parameters directly, in the order their forward starts."""
    owners = {name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))}
    seen: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name in owners:
            handles.append(module.register_forward_pre_hook(
                lambda _m, _i, name=name: seen.append(name) if name not in seen else None))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return seen + sorted(owners - set(seen))  # owners never called (unused heads) go last: top-down first


def cascade_groups(order: list[str], steps: int) -> list[list[str]]:
    """Split the forward order into ``steps`` consecutive groups, returned output side first."""
    steps = max(1, min(steps, len(order)))
    chunks = np.array_split(np.arange(len(order)), steps)
    groups = [[order[i] for i in chunk] for chunk in chunks]
    return groups[::-1]


def randomised_state(trained: nn.Module, fresh: nn.Module, modules: list[str]) -> dict:
    """State dict of ``trained`` with every parameter and buffer of ``modules`` taken from ``fresh``."""
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    fresh_state = fresh.state_dict()
    prefixes = [m + "." if m else "" for m in modules]
    for key in state:
        owner = key.rsplit(".", 1)[0] + "." if "." in key else ""
        if owner in prefixes:
            state[key] = fresh_state[key].clone()
    return state
