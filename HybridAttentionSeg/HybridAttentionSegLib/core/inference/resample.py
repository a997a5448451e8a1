"""Resampling along voxel axes with the grid MONAI ``Spacingd`` uses, and its inverse.

MONAI ``Spacing`` (``diagonal=False``, ``scale_extent=False``, every release from 0.7 to 1.6) keeps the centre
of the first voxel, places the new voxel centres ``step = target / current`` old voxels apart and rounds the
extent between the first and the last voxel centre: ``new = round((n - 1) * current / target + 1)``
(``monai.data.utils.compute_shape_offset``). It interpolates linearly and pads with the border value. Its
inverse (``Invertd``) samples the model grid at the old voxel centres the same way. Resizing the whole extent
instead (``F.interpolate(size=..., align_corners=False)``) shifts every voxel centre by up to half a voxel and
changes the labels of a model trained on MONAI's grid.

This is written out (not MONAI ``Spacing``) because MONAI resamples in world space with a full sampling grid
(one float per voxel and axis, 0.6 GB for a 512x512x200 CT) and round-trips MetaTensor affines; here linear
interpolation is separable along the three voxel axes, which is the same trilinear value with one small
intermediate per axis. The golden tests compare it with MONAI 0.7.0, 0.9.0 and 1.4.0 ``Spacingd``/``Invertd``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: relative spacing difference below which an axis is left untouched
SAME_SPACING = 1e-6


def spacing_grid(shape: Sequence[int], current: Sequence[float], target: Sequence[float]
                 ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(new shape, step in old voxels per new voxel) of MONAI ``Spacing`` for an axis-aligned resample."""
    sizes, steps = [], []
    for n, c, t in zip(shape, current, target, strict=True):
        if abs(float(c) - float(t)) <= SAME_SPACING * float(t):
            sizes.append(int(n))
            steps.append(1.0)
            continue
        sizes.append(max(1, int(np.round((int(n) - 1) * float(c) / float(t) + 1.0))))
        steps.append(float(t) / float(c))
    return tuple(sizes), tuple(steps)


def _neighbours(n: int, size: int, step: float, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, upper, weight) of new voxels ``first .. first + size - 1`` on an axis of ``n`` old voxels."""
    positions = np.arange(first, first + size, dtype=np.float64) * float(step)
    lower = np.clip(np.floor(positions), 0, n - 1).astype(np.int64)
    weight = np.clip(positions - lower, 0.0, 1.0)
    return lower, np.minimum(lower + 1, n - 1), weight


def resample_axis(t: torch.Tensor, dim: int, size: int, step: float, first: int = 0,
                  flip: bool = False, length: int | None = None, base: int = 0) -> torch.Tensor:
    """Linear samples of ``t`` along ``dim`` at old positions ``first * step, (first + 1) * step, ...`` (``size``
    of them; ``first`` > 0 computes only a run of the new voxels, with the very same numbers).

    Positions outside ``[0, n - 1]`` take the border value (MONAI's default ``padding_mode="border"``).
    ``flip``: sample ``t.flip(dim)`` instead, without its copy (old index i is read at ``n - 1 - i``).
    ``length``/``base``: ``t`` holds only old voxels ``base ..`` of an axis of ``length`` (a run's inputs).
    """
    n = t.shape[dim] if length is None else int(length)
    if first == 0 and size == n and step == 1.0 and base == 0:
        return t.flip(dim) if flip else t
    lower, upper, weight = _neighbours(n, size, step, first)
    if flip:
        lower, upper = n - 1 - lower, n - 1 - upper
    lower, upper = lower - base, upper - base
    shape = [1] * t.dim()
    shape[dim] = size
    w = torch.from_numpy(weight.astype(np.float32)).to(t.device).reshape(shape)
    lo = t.index_select(dim, torch.from_numpy(lower).to(t.device))
    hi = t.index_select(dim, torch.from_numpy(upper).to(t.device))
    # lo * (1 - w) + hi * w, the same products and sum in place: two full-size tensors instead of four
    return lo.mul_(1.0 - w).add_(hi.mul_(w))


def resample(t: torch.Tensor, sizes: Sequence[int], steps: Sequence[float], flips: Sequence[int] = ()
             ) -> torch.Tensor:
    """Resample the last three axes of ``t`` (any leading dims) to ``sizes`` with ``steps``; the spatial axes
    in ``flips`` (0-2) are read flipped (as ``t.flip``, without its input-sized copy)."""
    offset = t.dim() - 3
    if tuple(int(s) for s in sizes) == tuple(t.shape[offset:]) and all(float(s) == 1.0 for s in steps):
        return t.flip([offset + axis for axis in flips]) if flips else t  # nothing to resample: one flip copy
    for axis in range(3):
        t = resample_axis(t, offset + axis, int(sizes[axis]), float(steps[axis]), flip=axis in flips)
    return t


def resample_run(t: torch.Tensor, sizes: Sequence[int], steps: Sequence[float], axis: int, start: int, stop: int,
                 layout: Sequence[int] = (0, 1, 2)) -> torch.Tensor:
    """``resample(t, sizes, steps)`` restricted to new voxels ``start:stop`` along spatial ``axis`` (0-2), without
    computing the others. Same numbers: the old voxels that run needs are cut out first (resampling the other
    axes works element by element along ``axis``), the axes are resampled in the same order, and along ``axis``
    each new voxel depends only on its own position.

    ``layout``: the spatial axes from slowest to fastest in the memory of the result (a permuted view of a
    contiguous tensor), so that copying it into an array laid out that way is a straight copy.
    """
    offset = t.dim() - 3
    order = [int(a) for a in layout]
    t = t.permute(list(range(offset)) + [offset + a for a in order])  # computed in this order, same numbers

    def dim_of(a: int) -> int:
        return offset + order.index(a)

    dim, n = dim_of(axis), t.shape[dim_of(axis)]
    if int(sizes[axis]) == n and float(steps[axis]) == 1.0:
        t, resampled = t.narrow(dim, start, stop - start), False
    else:
        lower, upper, _ = _neighbours(n, stop - start, float(steps[axis]), start)
        base = int(lower.min())
        t, resampled = t.narrow(dim, base, int(upper.max()) + 1 - base), True
    for a in range(3):
        if a == axis and resampled:
            t = resample_axis(t, dim, stop - start, float(steps[a]), first=start, length=n, base=base)
        elif a != axis:
            t = resample_axis(t, dim_of(a), int(sizes[a]), float(steps[a]))
    return t.permute(list(range(offset)) + [offset + order.index(a) for a in range(3)])


def inverse_steps(model_steps: Sequence[float]) -> tuple[float, ...]:
    """Steps that sample the model grid at the old voxel centres (old voxel i sits at i / step)."""
    return tuple(1.0 / float(s) for s in model_steps)
